package scheduler

import (
	"context"
	"time"

	"github.com/offpeak/offpeak/plugins"
)

// Locker hands out reboot slots; plugins.Locker implementations (built-in or
// served by a plugin process) satisfy it.
type Locker interface {
	Acquire(ctx context.Context, req plugins.AcquireRequest) (plugins.AcquireResult, error)
	Release(ctx context.Context, req plugins.ReleaseRequest) error
	Status(ctx context.Context, group string) (plugins.LockState, error)
	Wait(ctx context.Context, group string, revision uint64) (plugins.LockState, error)
	Freeze(ctx context.Context, req plugins.FreezeRequest) error
}

// HealthCheck gives a verdict for one [[health]] entry.
type HealthCheck interface {
	Check(ctx context.Context, req plugins.CheckRequest) (plugins.CheckResult, error)
}

// Staged is the answer to "is a reboot needed?".
type Staged int

const (
	StagedNo Staged = iota
	StagedYes
	// StagedUnknown: a source could not answer; never reboot on it.
	StagedUnknown
)

func (s Staged) String() string {
	switch s {
	case StagedNo:
		return "no"
	case StagedYes:
		return "yes"
	}
	return "unknown"
}

// Detection is what the reboot-needed sources found.
type Detection struct {
	State   Staged `json:"-"`
	Version string `json:"version,omitempty"`
	Reason  string `json:"reason"`
	// Backend and Booted come from the installer, when one answered.
	Backend string `json:"backend,omitempty"`
	Booted  string `json:"booted,omitempty"`
}

// Detector tells whether an update waits for a reboot.
type Detector interface {
	Detect(ctx context.Context) Detection
}

// Installer marks a new boot good or rolls it back, after the post-boot
// checks. Optional.
type Installer interface {
	MarkGood(ctx context.Context) error
	Rollback(ctx context.Context) error
}

// Rebooter reboots the machine. It returns once the reboot was asked for;
// the process is normally killed soon after.
type Rebooter interface {
	Reboot(ctx context.Context) error
}

// Broadcaster warns logged-in users before a reboot. Optional.
type Broadcaster interface {
	Broadcast(ctx context.Context, message string) error
}

// InhibitorGate waits while something blocks shutdown (a logind "block"
// inhibitor), up to max, and returns an error naming the blocker when it
// is still held; waiting is told who blocks before it waits. Optional.
type InhibitorGate interface {
	WaitInhibitors(ctx context.Context, max time.Duration, waiting func(blockers string)) error
}

// Notifier sends events (reboot planned, rebooted, post-boot failed, group
// frozen). Optional; failures are logged, never fatal.
type Notifier interface {
	Notify(ctx context.Context, ev Event) error
}

// Event is one notification.
type Event struct {
	Kind    string            `json:"event"`
	Node    string            `json:"node"`
	Group   string            `json:"group"`
	Time    time.Time         `json:"time"`
	Reason  string            `json:"reason"`
	Details map[string]string `json:"details,omitempty"`
}

// Event kinds.
const (
	EventRebootPlanned  = "reboot-planned"
	EventRebooted       = "rebooted"
	EventPostBootFailed = "post-boot-failed"
	EventGroupFrozen    = "group-frozen"
)

// Store persists the agent's state.
type Store interface {
	Load(v any) error
	Save(v any) error
}

// Observer sees every decision (metrics, sd_notify STATUS=). Optional.
type Observer interface {
	Observe(r Result)
}
