// Package plugins is the public SDK for offpeak plugins: the handshake, the
// Locker and HealthCheck services and the Serve helper. A third-party plugin
// imports this package and nothing else from offpeak.
package plugins

import (
	"context"
	"encoding/json"
	"errors"
	"time"
)

// ProtocolVersion is the plugin protocol this SDK speaks. A host refuses a
// plugin that negotiates another version.
const ProtocolVersion = 1

// Phase names the point of the reboot cycle a health check runs at.
type Phase string

const (
	PhasePreReboot Phase = "pre-reboot"
	PhasePostBoot  Phase = "post-boot"
)

// Outcome is the verdict of one health check.
type Outcome string

const (
	Pass  Outcome = "pass"
	Fail  Outcome = "fail"
	Error Outcome = "error" // the check could not decide (timeout, unreachable, bad answer)
)

// Valid reports whether o is one of the three outcomes.
func (o Outcome) Valid() bool { return o == Pass || o == Fail || o == Error }

// Sentinel errors a Locker returns so callers can branch on them. Over the
// plugin protocol they travel as gRPC status codes and come back as the same
// values.
var (
	// ErrNotHolder: Release for a node that holds no slot.
	ErrNotHolder = errors.New("not a holder of a slot")
	// ErrFrozen: the group is frozen; no new slot is granted until thawed.
	ErrFrozen = errors.New("group is frozen")
	// ErrConflict: a compare-and-swap lost a race; the caller may retry.
	ErrConflict = errors.New("concurrent update, retry")
	// ErrUnavailable: the lock service cannot be reached.
	ErrUnavailable = errors.New("lock service unavailable")
	// ErrInvalidArgument: bad group, id, slot count or configuration.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrNodeIDCollision: a live holder record for the asker's id was
	// written by another machine (another boot id or hostname), so two
	// hosts share one node id. See SameNode.
	ErrNodeIDCollision = errors.New("node id collision")
)

// Holder describes the node holding a slot. Only ID is required; a holder
// written by another tool (airlock, a FleetLock client) may carry no more.
type Holder struct {
	ID         string            `json:"id"`
	Hostname   string            `json:"hostname,omitempty"`
	BootID     string            `json:"boot_id,omitempty"`
	Version    string            `json:"version,omitempty"` // target version being installed
	AcquiredAt time.Time         `json:"acquired_at,omitzero"`
	Deadline   time.Time         `json:"deadline,omitzero"` // after this the slot may be reclaimed, if policy says so
	Meta       map[string]string `json:"meta,omitempty"`
}

// LockState is a snapshot of one group's semaphore.
type LockState struct {
	Group        string    `json:"group"`
	Slots        int       `json:"slots"`
	Holders      []Holder  `json:"holders"`
	Frozen       bool      `json:"frozen"`
	FrozenReason string    `json:"frozen_reason,omitempty"`
	FrozenBy     string    `json:"frozen_by,omitempty"`
	FrozenAt     time.Time `json:"frozen_at,omitzero"`
	// Revision changes whenever the group's state changes; Wait blocks until
	// it differs from the value the caller saw.
	Revision uint64 `json:"revision"`
	// Opaque: the lock service does not report its slots and holders (a
	// plain FleetLock server); Slots and Holders say nothing, and only
	// asking again tells whether a slot is free.
	Opaque bool `json:"opaque,omitempty"`
	// Answer is the service's own words for a refusal when it is Opaque.
	// It comes from the network: print it escaped.
	Answer string `json:"answer,omitempty"`
	// PollInterval is how often to ask again when the service cannot be
	// watched (Opaque); zero when Wait watches.
	PollInterval time.Duration `json:"poll_interval,omitempty"`
}

// Holds reports whether id holds a slot in s.
func (s LockState) Holds(id string) bool {
	for _, h := range s.Holders {
		if h.ID == id {
			return true
		}
	}
	return false
}

// AcquireRequest asks for one slot of Group for Holder.ID.
type AcquireRequest struct {
	Group  string `json:"group"`
	Holder Holder `json:"holder"`
	// Slots is the slot count used when the group's semaphore does not exist
	// yet; an existing semaphore keeps its own count (change it with SetSlots).
	Slots int `json:"slots"`
	// ReclaimStale lets this request remove holders whose Deadline has passed
	// (the policy's stale_after). Without it a dead holder keeps its slot.
	ReclaimStale bool `json:"reclaim_stale"`
	// Now is the caller's clock, used for the stale test, so that simulated
	// time works; zero means the locker's own clock. A locker reached over
	// a network it does not trust (the FleetLock server) ignores it.
	Now time.Time `json:"now,omitzero"`
	// PreviousBootID is the boot id the asker wrote into its holder record
	// when it last took or refreshed its slot, if that was another boot
	// (it rebooted while holding). See SameNode.
	PreviousBootID string `json:"previous_boot_id,omitempty"`
}

// AcquireResult tells whether the slot was granted. Acquire is idempotent: a
// node that already holds a slot is granted again (its record is refreshed).
type AcquireResult struct {
	Granted   bool      `json:"granted"`
	State     LockState `json:"state"`
	Reclaimed []Holder  `json:"reclaimed,omitempty"` // stale holders removed by this call
}

// ReleaseRequest gives a slot back. Reason is recorded by backends that keep
// history and is shown in logs ("post-boot checks passed", "unlock by admin").
type ReleaseRequest struct {
	Group  string `json:"group"`
	ID     string `json:"id"`
	Reason string `json:"reason,omitempty"`
}

// FreezeRequest marks a group frozen so no other node takes a slot.
type FreezeRequest struct {
	Group  string    `json:"group"`
	Reason string    `json:"reason"`
	By     string    `json:"by"` // node id or operator
	At     time.Time `json:"at,omitzero"`
	// Slots is the slot count a group that has no semaphore yet gets when
	// it is thawed (the freeze creates it with none, so that every client of
	// the semaphore refuses); below 1 means 1.
	Slots int `json:"slots,omitempty"`
}

// Locker hands out reboot slots per group. Implementations must be safe for
// concurrent use and must never grant more than the group's slot count.
type Locker interface {
	// Configure passes the plugin's settings (the policy's [lock.config]
	// table as JSON). It is called once before any other method.
	Configure(ctx context.Context, config json.RawMessage) error
	Acquire(ctx context.Context, req AcquireRequest) (AcquireResult, error)
	// Release returns ErrNotHolder when req.ID holds no slot.
	Release(ctx context.Context, req ReleaseRequest) error
	Status(ctx context.Context, group string) (LockState, error)
	// Wait blocks until the group's Revision differs from revision, or ctx
	// ends, and returns the new state. Backends that can watch must not poll.
	Wait(ctx context.Context, group string, revision uint64) (LockState, error)
	// SetSlots changes the slot count; existing holders keep their slots even
	// when the new count is below their number.
	SetSlots(ctx context.Context, group string, slots int) (LockState, error)
	Freeze(ctx context.Context, req FreezeRequest) error
	Thaw(ctx context.Context, group string) error
}

// Node identifies the node a check runs for.
type Node struct {
	ID       string `json:"id"`
	Group    string `json:"group"`
	Hostname string `json:"hostname,omitempty"`
	BootID   string `json:"boot_id,omitempty"`
}

// CheckRequest asks a health check for a verdict.
type CheckRequest struct {
	Name   string          `json:"name"`   // the [[health]] entry's name
	Phase  Phase           `json:"phase"`  // pre-reboot or post-boot
	Node   Node            `json:"node"`   // who asks
	Config json.RawMessage `json:"config"` // the entry's [health.config] table as JSON
}

// CheckResult is a verdict with its reason. Details are optional key/values
// shown by `offpeak status`.
type CheckResult struct {
	Outcome Outcome           `json:"outcome"`
	Reason  string            `json:"reason"`
	Details map[string]string `json:"details,omitempty"`
	Time    time.Time         `json:"time"`
}

// HealthCheck answers whether the node may reboot (pre-reboot) or whether the
// new boot is good (post-boot). It returns an error only when it cannot run at
// all; a check that ran and could not decide returns Outcome Error.
type HealthCheck interface {
	Check(ctx context.Context, req CheckRequest) (CheckResult, error)
}
