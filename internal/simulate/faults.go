package simulate

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/offpeak/offpeak/scheduler/policy"
)

// FaultsHelp documents the --faults format; the command prints it.
const FaultsHelp = `--faults is a comma-separated list of KEY=VALUE:

  kill=FRACTION        kill the agents of this fraction of the nodes once per round, each
                       at one of five phases taken in turn: a random moment, right after
                       a slot is granted (before the state is saved), at the pre-reboot
                       check (slot held), in the middle of the reboot, at the post-boot
                       check; the agent is rebuilt from its persisted state after a
                       random downtime (a node killed mid-reboot still boots)
  downtime=DURATION    longest downtime of a killed agent (default 10m; at least 30s)
  outage=DURATION@N    N lock-service outages of DURATION at random moments inside
                       windows; every locker call fails with "unavailable" meanwhile
  postboot-fail=FRAC   the post-boot check fails on this fraction of the nodes once per
                       round; the node keeps its slot and freezes its group
  thaw-after=DURATION  how long the simulated operator takes to fix such a node and thaw
                       the group (default 30m)
  clockjump=DURATION@N N jumps of the virtual clock by DURATION at random moments inside
                       windows: every timer due in between fires late

Example: kill=0.05,outage=30m@2,postboot-fail=0.02,clockjump=10m@3`

// Faults is a parsed --faults specification.
type Faults struct {
	Kill         float64       `json:"kill,omitempty"`
	Downtime     time.Duration `json:"-"`
	Outages      int           `json:"outages,omitempty"`
	OutageLen    time.Duration `json:"-"`
	PostBootFail float64       `json:"postboot_fail,omitempty"`
	ThawAfter    time.Duration `json:"-"`
	ClockJumps   int           `json:"clock_jumps,omitempty"`
	ClockJump    time.Duration `json:"-"`
}

// Default fault parameters.
const (
	DefaultDowntime  = 10 * time.Minute
	DefaultThawAfter = 30 * time.Minute
	minDowntime      = 30 * time.Second
)

// Any reports whether any fault is enabled.
func (f Faults) Any() bool {
	return f.Kill > 0 || f.Outages > 0 || f.PostBootFail > 0 || f.ClockJumps > 0
}

// ParseFaults reads a --faults specification; see FaultsHelp.
func ParseFaults(spec string) (Faults, error) {
	f := Faults{Downtime: DefaultDowntime, ThawAfter: DefaultThawAfter}
	spec = strings.TrimSpace(spec)
	if spec == "" {
		return f, nil
	}
	seen := map[string]bool{}
	for _, item := range strings.Split(spec, ",") {
		key, val, ok := strings.Cut(strings.TrimSpace(item), "=")
		if !ok || val == "" {
			return f, fmt.Errorf("fault %q: want KEY=VALUE", item)
		}
		if seen[key] {
			return f, fmt.Errorf("fault %q given twice", key)
		}
		seen[key] = true
		var err error
		switch key {
		case "kill":
			f.Kill, err = fraction(val)
		case "postboot-fail":
			f.PostBootFail, err = fraction(val)
		case "downtime":
			f.Downtime, err = duration(val)
			if err == nil && f.Downtime < minDowntime {
				err = fmt.Errorf("at least %s", minDowntime)
			}
		case "thaw-after":
			f.ThawAfter, err = duration(val)
		case "outage":
			f.OutageLen, f.Outages, err = durationCount(val)
		case "clockjump":
			f.ClockJump, f.ClockJumps, err = durationCount(val)
		default:
			return f, fmt.Errorf("unknown fault %q (valid: kill, downtime, outage, postboot-fail, thaw-after, clockjump)", key)
		}
		if err != nil {
			return f, fmt.Errorf("fault %s=%s: %w", key, val, err)
		}
	}
	return f, nil
}

// String prints f in the --faults format; "none" when nothing is enabled.
func (f Faults) String() string {
	var parts []string
	if f.Kill > 0 {
		parts = append(parts, "kill="+strconv.FormatFloat(f.Kill, 'g', -1, 64))
	}
	if f.Kill > 0 || (f.Downtime != DefaultDowntime && f.Downtime > 0) {
		parts = append(parts, "downtime="+policy.FormatDuration(f.Downtime))
	}
	if f.Outages > 0 {
		parts = append(parts, fmt.Sprintf("outage=%s@%d", policy.FormatDuration(f.OutageLen), f.Outages))
	}
	if f.PostBootFail > 0 {
		parts = append(parts, "postboot-fail="+strconv.FormatFloat(f.PostBootFail, 'g', -1, 64))
	}
	if f.PostBootFail > 0 || (f.ThawAfter != DefaultThawAfter && f.ThawAfter > 0) {
		parts = append(parts, "thaw-after="+policy.FormatDuration(f.ThawAfter))
	}
	if f.ClockJumps > 0 {
		parts = append(parts, fmt.Sprintf("clockjump=%s@%d", policy.FormatDuration(f.ClockJump), f.ClockJumps))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ",")
}

func fraction(s string) (float64, error) {
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v < 0 || v > 1 {
		return 0, fmt.Errorf("want a fraction between 0 and 1")
	}
	return v, nil
}

func duration(s string) (time.Duration, error) {
	d, err := policy.ParseDuration(s)
	if err != nil {
		return 0, err
	}
	if d <= 0 {
		return 0, fmt.Errorf("want a positive duration")
	}
	return d, nil
}

func durationCount(s string) (time.Duration, int, error) {
	ds, ns, ok := strings.Cut(s, "@")
	if !ok {
		ns = "1"
	}
	d, err := duration(ds)
	if err != nil {
		return 0, 0, err
	}
	n, err := strconv.Atoi(ns)
	if err != nil || n < 0 {
		return 0, 0, fmt.Errorf("count %q: want a non-negative integer", ns)
	}
	return d, n, nil
}
