package scheduler

import (
	"time"

	"github.com/offpeak/offpeak/plugins"
	"github.com/offpeak/offpeak/scheduler/policy"
)

// Decision is what one pass decided, as printed by `offpeak check --output
// json`.
type Decision string

// Decisions.
const (
	DecisionIdle       Decision = "idle"
	DecisionWaitWindow Decision = "wait-window"
	DecisionWaitSlot   Decision = "wait-slot"
	DecisionWaitHealth Decision = "wait-health"
	DecisionReboot     Decision = "reboot"
	DecisionPostBoot   Decision = "post-boot"
	DecisionBlocked    Decision = "blocked"
)

// Phase is where the persisted state is in the reboot cycle.
type Phase string

// Phases of the persisted state.
const (
	PhaseIdle      Phase = "idle"
	PhaseAcquiring Phase = "acquiring" // asked the locker; may hold a slot
	PhaseHolding   Phase = "holding"
	PhaseRebooting Phase = "rebooting" // the reboot was asked for
	PhasePostBoot  Phase = "post-boot" // a new boot, checks pending
	PhaseFailed    Phase = "failed"    // post-boot checks failed; slot kept, group frozen
)

// Result is one pass of the pipeline: what was decided and why.
type Result struct {
	Decision    Decision      `json:"decision"`
	Reason      string        `json:"reason"`
	NextWindow  *time.Time    `json:"next_window"`
	HoldingSlot bool          `json:"holding_slot"`
	Phase       Phase         `json:"phase"`
	Strategy    string        `json:"strategy"`
	Node        string        `json:"node"`
	Group       string        `json:"group"`
	Time        time.Time     `json:"time"`
	DryRun      bool          `json:"dry_run,omitempty"`
	Staged      *StagedInfo   `json:"staged,omitempty"`
	Window      *WindowInfo   `json:"window,omitempty"`
	Lock        *LockInfo     `json:"lock,omitempty"`
	Checks      []CheckRecord `json:"checks,omitempty"`
	LastReboot  *time.Time    `json:"last_reboot,omitempty"`
	// NodeIDCollision: the locker found this node's id held by another
	// machine (cloned machine ids); nothing reboots until it is fixed.
	NodeIDCollision bool `json:"node_id_collision,omitempty"`

	// lockRevision lets the loop wait for the locker to change.
	lockRevision uint64
	wakeAt       time.Time
	// polling: the locker cannot be watched; the loop asks again at wakeAt
	// even when that is later than its period.
	polling bool
	// warn: the decision is logged as a warning (the lock service could
	// not be reached, or a held slot cannot be given back).
	warn bool
}

// StagedInfo reports the reboot-needed detection.
type StagedInfo struct {
	State         string `json:"state"` // yes | no | unknown
	Version       string `json:"version,omitempty"`
	Reason        string `json:"reason"`
	Backend       string `json:"backend,omitempty"`
	BootedVersion string `json:"booted_version,omitempty"`
}

// WindowInfo is the window a reboot may begin in.
type WindowInfo struct {
	Name        string    `json:"name"`
	Start       time.Time `json:"start"`
	End         time.Time `json:"end"`
	RebootUntil time.Time `json:"reboot_until"`
}

// LockInfo summarises the group's semaphore as last seen.
type LockInfo struct {
	Slots        int              `json:"slots"`
	Holders      []plugins.Holder `json:"holders"`
	Frozen       bool             `json:"frozen"`
	FrozenReason string           `json:"frozen_reason,omitempty"`
	// Opaque: the locker reports no slots and holders (a plain FleetLock
	// server); Slots and Holders say nothing.
	Opaque bool `json:"opaque,omitempty"`
}

// CheckRecord is the last result of one health check.
type CheckRecord struct {
	Name     string          `json:"name"`
	Plugin   string          `json:"plugin"`
	Phase    policy.Phase    `json:"phase"`
	Outcome  plugins.Outcome `json:"outcome"`
	Reason   string          `json:"reason"`
	Time     time.Time       `json:"time"`
	Attempts int             `json:"attempts"`
}
