// Package publicapi shows offpeak's public packages used from another Go
// module: window arithmetic (scheduler, scheduler/policy), the native GPT
// A/B installer (installer/gpt) and the locker conformance suite
// (lockers/lockertest). It imports nothing from offpeak's internal
// packages, which Go would refuse across modules anyway.
package publicapi

import (
	"path/filepath"
	"time"

	"github.com/offpeak/offpeak/scheduler"
	"github.com/offpeak/offpeak/scheduler/policy"
)

// Weeknights is a calendar of weeknight windows from 02:00 to 05:00 in
// zone, no reboot starting in the last half hour, with one blackout.
func Weeknights(zone string, freeze policy.Blackout) (*scheduler.Calendar, error) {
	return scheduler.NewCalendar([]policy.Window{{
		Name:     "weeknights",
		Start:    "0 2 * * 1-5",
		Duration: policy.Duration(3 * time.Hour),
		Timezone: zone,
		Cutoff:   policy.Duration(30 * time.Minute),
	}}, []policy.Blackout{freeze})
}

// Below returns a join function placing system paths below root, as
// offpeak's --root does; installer/gpt takes one.
func Below(root string) func(string) string {
	return func(p string) string { return filepath.Join(root, p) }
}
