package scheduler

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/offpeak/offpeak/internal/printable"
	"github.com/offpeak/offpeak/internal/redact"
	"github.com/offpeak/offpeak/plugins"
	"github.com/offpeak/offpeak/scheduler/policy"
	"github.com/offpeak/offpeak/strategies"
)

// ErrNoNodeID means the node has no id (no node.id, no /etc/machine-id).
var ErrNoNodeID = errors.New("node id unknown")

// Options wires an Agent to the world.
type Options struct {
	Policy   *policy.Policy
	NodeID   string
	Hostname string
	// BootID returns the current boot's id; a change means the node rebooted.
	BootID func() (string, error)
	Clock  Clock
	// Locker may be nil for strategies that take no slot.
	Locker Locker
	// Checks resolves a [[health]] plugin name to a check, started lazily.
	Checks    func(plugin string) (HealthCheck, error)
	Detector  Detector
	Installer Installer
	Rebooter  Rebooter
	Notifier  Notifier
	Observer  Observer
	Store     Store
	DryRun    bool
	Logger    *slog.Logger
	// Rand draws the loop's jitter; nil means a random seed.
	Rand *rand.Rand
	// RebootTimeout is how long after asking for a reboot the agent
	// concludes it did not happen and evaluates again.
	RebootTimeout time.Duration
}

// State is what the agent persists between passes and across reboots.
type State struct {
	Phase          Phase     `json:"phase"`
	Group          string    `json:"group,omitempty"` // group the slot belongs to
	SlotAcquiredAt time.Time `json:"slot_acquired_at,omitzero"`
	// SlotBootID is the boot id this node wrote into its holder record at
	// its last grant. After a reboot while holding, it tells the locker that
	// the record of the earlier boot is this node's (plugins.SameNode).
	SlotBootID        string                 `json:"slot_boot_id,omitempty"`
	BootID            string                 `json:"boot_id,omitempty"`
	RebootFromBootID  string                 `json:"reboot_from_boot_id,omitempty"`
	RebootRequestedAt time.Time              `json:"reboot_requested_at,omitzero"`
	RebootError       string                 `json:"reboot_error,omitempty"`
	PostBootSince     time.Time              `json:"post_boot_since,omitzero"`
	RolledBack        bool                   `json:"rolled_back,omitempty"`
	FailureReason     string                 `json:"failure_reason,omitempty"`
	Reboots           []time.Time            `json:"reboots,omitempty"`
	LastReboot        time.Time              `json:"last_reboot,omitzero"`
	CheckFailures     int                    `json:"check_failures,omitempty"`
	BackoffUntil      time.Time              `json:"backoff_until,omitzero"`
	Checks            map[string]CheckRecord `json:"checks,omitempty"`
	// Lockless: the reboot went ahead without a slot (best-effort), so
	// there is nothing to give back.
	Lockless bool `json:"lockless,omitempty"`
	// Slot is where the slot was taken, while one may be held.
	Slot *SlotRef `json:"slot,omitempty"`
	// ReloadRefused is why the last policy reload was refused, until one
	// goes through.
	ReloadRefused   string    `json:"reload_refused,omitempty"`
	ReloadRefusedAt time.Time `json:"reload_refused_at,omitzero"`
	Last            *Result   `json:"last,omitempty"`
}

// UnmarshalJSON reads a state file strictly. Content the agent cannot
// account for (null, no or an unknown phase, a key it does not know) is an
// error, so a damaged file stops the agent instead of reading as idle: a node
// that was mid-reboot would otherwise take a slot again and forget its
// reboot history.
func (s *State) UnmarshalJSON(b []byte) error {
	if bytes.Equal(bytes.TrimSpace(b), []byte("null")) {
		return errors.New("state is null")
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(b, &keys); err != nil {
		return err
	}
	known := map[string]bool{}
	t := reflect.TypeFor[State]()
	for i := range t.NumField() {
		known[strings.Split(t.Field(i).Tag.Get("json"), ",")[0]] = true
	}
	for k := range keys {
		if !known[k] {
			return fmt.Errorf("unknown key %q", k)
		}
	}
	type plain State
	var v plain
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	switch v.Phase {
	case "":
		return errors.New("no phase")
	case PhaseIdle, PhaseAcquiring, PhaseHolding, PhaseRebooting, PhasePostBoot, PhaseFailed:
	default:
		return fmt.Errorf("unknown phase %q", v.Phase)
	}
	*s = State(v)
	return nil
}

// holding reports whether the state may hold a slot.
func (s *State) holding() bool {
	switch s.Phase {
	case PhaseAcquiring, PhaseHolding, PhaseRebooting, PhasePostBoot, PhaseFailed:
		return true
	}
	return false
}

// Agent runs the admission pipeline for one node.
type Agent struct {
	opts Options
	log  *slog.Logger

	mu     sync.Mutex
	pol    *policy.Policy
	cal    *Calendar
	gates  strategies.Gates
	st     State
	reload chan struct{}
	rnd    *rand.Rand

	// A release that failed is owed: it is retried first thing in the
	// following passes, after a short backoff instead of the interval, so
	// a slot is free soon after the lock service is back.
	releaseOwed    string // why the slot is being given back; "" when nothing is owed
	releaseFails   int
	releaseErr     error
	releaseRetryAt time.Time
}

// Release retries back off from releaseRetryMin, doubling up to
// releaseRetryMax (and never beyond the agent interval).
const (
	releaseRetryMin = time.Second
	releaseRetryMax = time.Minute
)

// New builds an agent and loads its persisted state. A corrupt state file is
// an error: the agent must not guess whether it holds a slot.
func New(opts Options) (*Agent, error) {
	if opts.NodeID == "" {
		return nil, ErrNoNodeID
	}
	if opts.Clock == nil {
		opts.Clock = RealClock{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.RebootTimeout == 0 {
		opts.RebootTimeout = 15 * time.Minute
	}
	if opts.Rand == nil {
		opts.Rand = rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	}
	a := &Agent{opts: opts, log: opts.Logger, reload: make(chan struct{}, 1), rnd: opts.Rand}
	cal, g, err := compile(opts.Policy, opts.Locker)
	if err != nil {
		return nil, err
	}
	a.pol, a.cal, a.gates = opts.Policy, cal, g
	if opts.Store != nil {
		if err := opts.Store.Load(&a.st); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("agent state: %w", err)
		}
	}
	if a.st.Phase == "" {
		a.st.Phase = PhaseIdle
	}
	return a, nil
}

// compile checks that p is usable with locker and prepares its calendar
// and gates.
func compile(p *policy.Policy, locker Locker) (*Calendar, strategies.Gates, error) {
	if p == nil {
		return nil, strategies.Gates{}, errors.New("agent: no policy")
	}
	cal, err := NewCalendar(p.Windows, p.Blackouts)
	if err != nil {
		return nil, strategies.Gates{}, err
	}
	g, err := strategies.Lookup(p.Strategy)
	if err != nil {
		return nil, strategies.Gates{}, err
	}
	if g.Lock && locker == nil {
		return nil, strategies.Gates{}, fmt.Errorf("strategy %q needs a locker", p.Strategy)
	}
	return cal, g, nil
}

// State returns a copy of the persisted state.
func (a *Agent) State() State {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.st
}

func (a *Agent) save() error {
	if !a.st.holding() {
		a.st.Slot = nil
	}
	if a.opts.Store == nil {
		return nil
	}
	if err := a.opts.Store.Save(&a.st); err != nil {
		return fmt.Errorf("saving state: %w", err)
	}
	return nil
}

func (a *Agent) bootID() (string, error) {
	if a.opts.BootID == nil {
		return "", nil
	}
	return a.opts.BootID()
}

// Step runs one pass of the pipeline and persists what it decided.
func (a *Agent) Step(ctx context.Context) (Result, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.opts.Clock.Now()
	r := Result{Time: now, Strategy: a.pol.Strategy, Node: a.opts.NodeID, Group: a.pol.Node.Group, DryRun: a.opts.DryRun}
	if a.gates.Window {
		if at, ok := a.cal.NextStart(now); ok {
			r.NextWindow = &at
		}
	}
	err := a.step(ctx, now, &r)
	if a.releaseOwed != "" {
		r.warn = true
		if r.wakeAt.IsZero() || a.releaseRetryAt.Before(r.wakeAt) {
			r.wakeAt = a.releaseRetryAt
		}
	}
	a.complete(&r)
	if serr := a.publish(r); serr != nil && err == nil {
		err = serr
	}
	return r, err
}

// publish records r as the last decision (state.json, what `offpeak status`
// shows), logs it and tells the observer (sd_notify STATUS=, metrics,
// coordinator.conf). It returns the error of saving the state.
func (a *Agent) publish(r Result) error {
	a.st.Last = &r
	err := a.save()
	// A node that cannot take or give back its slot (lock service out of
	// reach, slot held elsewhere) is worth a warning, not a note.
	level := slog.LevelInfo
	if r.warn {
		level = slog.LevelWarn
	}
	a.log.Log(context.Background(), level, "decision", "decision", r.Decision, "reason", r.Reason, "phase", r.Phase, "group", r.Group)
	if a.opts.Observer != nil {
		a.opts.Observer.Observe(r)
	}
	return err
}

// complete fills in what a result reports about the agent's state.
func (a *Agent) complete(r *Result) {
	r.Phase = a.st.Phase
	r.HoldingSlot = a.st.holding() && a.st.Phase != PhaseAcquiring
	r.LastReboot = nil
	if !a.st.LastReboot.IsZero() {
		lr := a.st.LastReboot
		r.LastReboot = &lr
	}
	r.Checks = nil
	for _, h := range a.pol.Health {
		if c, ok := a.st.Checks[h.Name]; ok {
			r.Checks = append(r.Checks, c)
		}
	}
}

// announce publishes an interim decision while the pass goes on; the
// pass's final decision replaces it.
func (a *Agent) announce(r *Result, decision Decision, format string, args ...any) {
	a.decide(r, decision, format, args...)
	interim := *r
	a.complete(&interim)
	if err := a.publish(interim); err != nil {
		a.log.Warn("could not record the interim decision", "err", err)
	}
}

func (a *Agent) decide(r *Result, decision Decision, format string, args ...any) {
	r.Decision = decision
	r.Reason = fmt.Sprintf(format, args...)
}

func (a *Agent) step(ctx context.Context, now time.Time, r *Result) error {
	boot, err := a.bootID()
	if err != nil {
		a.decide(r, DecisionBlocked, "cannot read the boot id: %v", err)
		return nil
	}
	a.st.BootID = boot
	if a.st.Phase == PhaseRebooting {
		switch {
		case boot != a.st.RebootFromBootID:
			a.st.Phase = PhasePostBoot
			a.st.PostBootSince = now
			a.st.LastReboot = now
			a.notify(ctx, EventRebooted, fmt.Sprintf("booted after the reboot asked for at %s", a.st.RebootRequestedAt.Format(time.RFC3339)), nil)
		case now.Sub(a.st.RebootRequestedAt) < a.opts.RebootTimeout:
			a.decide(r, DecisionReboot, "reboot asked for at %s; waiting for it", a.st.RebootRequestedAt.Format(time.RFC3339))
			r.wakeAt = a.st.RebootRequestedAt.Add(a.opts.RebootTimeout)
			return nil
		default:
			a.log.Warn("the reboot asked for did not happen; evaluating again", "asked_at", a.st.RebootRequestedAt)
			a.st.Phase = PhaseHolding
		}
	}
	if a.slotMoved(r) {
		return nil
	}
	if a.releaseOwed != "" && !a.retryRelease(ctx, r) {
		return nil
	}
	switch a.st.Phase {
	case PhasePostBoot:
		return a.postBoot(ctx, now, r)
	case PhaseFailed:
		return a.failed(ctx, now, r)
	}
	return a.preReboot(ctx, now, boot, r)
}

func (a *Agent) preReboot(ctx context.Context, now time.Time, boot string, r *Result) error {
	det := a.opts.Detector.Detect(ctx)
	r.Staged = &StagedInfo{State: det.State.String(), Version: det.Version, Reason: det.Reason, Backend: det.Backend, BootedVersion: det.Booted}
	switch det.State {
	case StagedNo:
		a.releaseIfHeld(ctx, "no update staged")
		a.st.CheckFailures, a.st.BackoffUntil = 0, time.Time{}
		a.decide(r, DecisionIdle, "no update staged")
		return nil
	case StagedUnknown:
		a.releaseIfHeld(ctx, "staged state unknown")
		a.decide(r, DecisionBlocked, "cannot tell whether an update is staged: %s", det.Reason)
		return nil
	}
	g := a.gates
	if !g.Reboots {
		a.releaseIfHeld(ctx, "strategy off")
		a.decide(r, DecisionBlocked, "update staged%s; strategy %q never reboots", versionSuffix(det.Version), a.pol.Strategy)
		return nil
	}
	if spent, next := a.budgetSpent(now); spent {
		a.releaseIfHeld(ctx, "reboot budget spent")
		a.decide(r, DecisionBlocked, "reboot budget spent: %d reboots in the last %s; next reboot allowed after %s",
			a.pol.Budget.MaxReboots, policy.FormatDuration(a.pol.Budget.Period.D()), next.Format(time.RFC3339))
		r.wakeAt = next
		return nil
	}
	if now.Before(a.st.BackoffUntil) {
		a.decide(r, DecisionWaitHealth, "pre-reboot checks failed %d time(s); retrying after %s", a.st.CheckFailures, a.st.BackoffUntil.Format(time.RFC3339))
		r.wakeAt = a.st.BackoffUntil
		return nil
	}
	if ok := a.windowOpen(ctx, now, r, beforeSlot); !ok {
		return nil
	}

	// Take a slot.
	lockless := false
	if g.Lock {
		wasHolding := a.st.holding()
		granted, err := a.acquire(ctx, now, boot, det, r)
		switch {
		case errors.Is(err, plugins.ErrNodeIDCollision):
			// Never a lockless fallback: the locker answered, and the
			// answer is that another machine holds this node's slot.
			a.collision(r, err)
			return nil
		case err != nil && g.LockOptional && !wasHolding:
			a.log.Warn("locker unreachable; best-effort strategy reboots without a slot", "err", err)
			r.warn = true
			lockless = true
			a.st.Lockless = true
		case err != nil:
			r.warn = true
			a.decide(r, DecisionWaitSlot, "locker unavailable: %v", err)
			return nil
		case !granted:
			return nil
		}
		if !a.windowOpen(ctx, a.opts.Clock.Now(), r, afterSlot) {
			return nil
		}
	}

	// Pre-reboot checks.
	if failed := a.runChecks(ctx, policy.PhasePreReboot, r); failed != nil {
		a.releaseIfHeld(ctx, "pre-reboot check failed")
		a.st.CheckFailures++
		a.st.BackoffUntil = a.opts.Clock.Now().Add(a.backoff())
		a.decide(r, DecisionWaitHealth, "check '%s' failed: %s", failed.Name, failed.Reason)
		return nil
	}
	a.st.CheckFailures, a.st.BackoffUntil = 0, time.Time{}
	if !a.windowOpen(ctx, a.opts.Clock.Now(), r, afterChecks) {
		return nil
	}

	if a.opts.DryRun {
		a.decide(r, DecisionReboot, "would reboot now%s (dry run)%s", versionSuffix(det.Version), a.rebootContext(r, lockless))
		a.log.Info("dry run: would reboot", "node", a.opts.NodeID, "group", a.pol.Node.Group)
		return nil
	}

	// Warn users, respect inhibitors, and look at the window one last time.
	// Those waits can take minutes, so each is announced as it starts.
	version := versionSuffix(det.Version)
	if warn := a.pol.Reboot.Warn.D(); warn > 0 {
		warned := ""
		if b, ok := a.opts.Rebooter.(Broadcaster); ok {
			msg := fmt.Sprintf("%s in %s", a.pol.Reboot.Message, policy.FormatDuration(warn))
			if err := b.Broadcast(ctx, msg); err != nil {
				a.log.Warn("broadcast failed", "err", err)
				warned = ", warning logged-in users failed"
			} else {
				warned = ", logged-in users warned"
			}
		}
		at := a.opts.Clock.Now().Add(warn).Format(time.RFC3339)
		a.announce(r, DecisionReboot, "rebooting%s at %s after a %s warning%s%s", version, at, policy.FormatDuration(warn), warned, a.rebootContext(r, lockless))
		if err := Sleep(ctx, a.opts.Clock, warn); err != nil {
			// Stopped during the warning: the announced reboot is off.
			a.decide(r, DecisionBlocked, "reboot not asked for: stopped during the warning delay (%v)", err)
			return err
		}
	}
	if gate, ok := a.opts.Rebooter.(InhibitorGate); ok {
		maxWait := a.pol.Reboot.MaxInhibitWait.D()
		err := gate.WaitInhibitors(ctx, maxWait, func(blockers string) {
			a.announce(r, DecisionReboot, "rebooting%s when shutdown is no longer inhibited (waiting up to %s); %s", version, policy.FormatDuration(maxWait), blockers)
		})
		if err != nil {
			a.releaseIfHeld(ctx, "shutdown inhibited")
			a.decide(r, DecisionBlocked, "reboot held back: %v", err)
			return nil
		}
	}
	// The webhook can wait too (bounded by the notifier), so it is told
	// before the last look at the window, not between it and the reboot.
	a.notify(ctx, EventRebootPlanned, "rebooting"+version, nil)
	// From here on nothing waits: the last window check, the state saved,
	// the reboot asked for.
	if !a.windowOpen(ctx, a.opts.Clock.Now(), r, beforeReboot) {
		return nil
	}
	return a.reboot(ctx, a.opts.Clock.Now(), boot, det, r, lockless)
}

func (a *Agent) reboot(ctx context.Context, now time.Time, boot string, det Detection, r *Result, lockless bool) error {
	a.st.Phase = PhaseRebooting
	a.st.RebootFromBootID = boot
	a.st.RebootRequestedAt = now
	a.st.RebootError = ""
	a.st.PostBootSince = time.Time{}
	a.st.Reboots = append(a.st.Reboots, now)
	// Persist before asking: a crash right after the request must resume as
	// "rebooting", not start over and ask again.
	if err := a.save(); err != nil {
		a.st.Phase = PhaseHolding
		a.st.Reboots = a.st.Reboots[:len(a.st.Reboots)-1]
		a.releaseIfHeld(ctx, "state not saved")
		a.decide(r, DecisionBlocked, "not rebooting: %v", err)
		return nil
	}
	if err := a.opts.Rebooter.Reboot(ctx); err != nil {
		a.st.RebootError = err.Error()
		a.st.Reboots = a.st.Reboots[:len(a.st.Reboots)-1]
		a.st.Phase = PhaseHolding
		a.releaseIfHeld(ctx, "reboot failed")
		a.decide(r, DecisionBlocked, "reboot failed: %v", err)
		return nil
	}
	a.decide(r, DecisionReboot, "rebooting%s%s", versionSuffix(det.Version), a.rebootContext(r, lockless))
	r.wakeAt = now.Add(a.opts.RebootTimeout)
	return nil
}

func (a *Agent) rebootContext(r *Result, lockless bool) string {
	var parts []string
	if r.Window != nil {
		parts = append(parts, fmt.Sprintf("window %s open until %s", r.Window.Name, r.Window.RebootUntil.Format(time.RFC3339)))
	}
	switch {
	case lockless:
		parts = append(parts, "no slot (locker unreachable, best-effort)")
	case a.gates.Lock && a.opts.DryRun:
		parts = append(parts, "a slot is free")
	case a.gates.Lock:
		parts = append(parts, "slot held")
	}
	if n := len(a.checksFor(policy.PhasePreReboot)); n > 0 {
		parts = append(parts, fmt.Sprintf("%d check(s) passed", n))
	}
	if len(parts) == 0 {
		return ""
	}
	return ": " + strings.Join(parts, ", ")
}

// checkpoint is where in the pass the window is looked at: before the slot
// is taken, after it, after the pre-reboot checks and right before the
// reboot is asked for.
type checkpoint int

const (
	beforeSlot checkpoint = iota
	afterSlot
	afterChecks
	beforeReboot
)

// String is the checkpoint as a reason names it.
func (c checkpoint) String() string {
	switch c {
	case beforeSlot:
		return "before taking a slot"
	case afterSlot:
		return "after taking the slot"
	case afterChecks:
		return "after the pre-reboot checks"
	}
	return "right before rebooting"
}

// windowOpen applies the window gate and, when closed, gives a held slot back.
func (a *Agent) windowOpen(ctx context.Context, now time.Time, r *Result, when checkpoint) bool {
	if !a.gates.Window {
		return true
	}
	w, ok := a.cal.Allowed(now)
	if ok {
		r.Window = &WindowInfo{Name: w.Name, Start: w.Start, End: w.End, RebootUntil: w.RebootUntil}
		r.wakeAt = w.RebootUntil
		return true
	}
	a.releaseIfHeld(ctx, "window closed "+when.String())
	r.Window = nil
	next, has := a.cal.NextStart(now)
	if !has {
		a.decide(r, DecisionWaitWindow, "outside window; no window opens within six years")
		return false
	}
	r.NextWindow = &next
	r.wakeAt = next
	if when == beforeSlot {
		a.decide(r, DecisionWaitWindow, "outside window, next opens at %s", next.Format(time.RFC3339))
	} else {
		a.decide(r, DecisionWaitWindow, "window closed %s; slot given back; next opens at %s", when, next.Format(time.RFC3339))
	}
	return false
}

// acquire asks for a slot; it reports false with the decision set when the
// slot was not granted.
func (a *Agent) acquire(ctx context.Context, now time.Time, boot string, det Detection, r *Result) (bool, error) {
	group := a.pol.Node.Group
	// The holder record is public to the group: a version string (an image
	// reference, say) must not publish a credential it carries.
	h := plugins.Holder{ID: a.opts.NodeID, Hostname: a.opts.Hostname, BootID: boot, Version: redact.String(det.Version), AcquiredAt: now}
	if sa := a.pol.Lock.StaleAfter.D(); sa > 0 {
		h.Deadline = now.Add(sa)
	}
	if a.opts.DryRun {
		st, err := a.lockCall(ctx, func(c context.Context) (plugins.LockState, error) { return a.opts.Locker.Status(c, group) })
		if err != nil {
			return false, err
		}
		a.lockInfo(r, st)
		for _, held := range st.Holders {
			if held.ID == h.ID {
				if err := plugins.SameNode(held, h, a.previousBootID(boot)); err != nil {
					return false, err
				}
				return true, nil
			}
		}
		if !st.Frozen && len(st.Holders) < st.Slots {
			return true, nil
		}
		a.slotRefused(r, now, st)
		return false, nil
	}
	if !a.st.holding() {
		a.st.Phase = PhaseAcquiring
		a.st.Group = group
		ref := a.slotRef()
		a.st.Slot = &ref
		if err := a.save(); err != nil {
			return false, err
		}
	}
	var res plugins.AcquireResult
	_, err := a.lockCall(ctx, func(c context.Context) (plugins.LockState, error) {
		var err error
		res, err = a.opts.Locker.Acquire(c, plugins.AcquireRequest{Group: group, Holder: h, Slots: a.pol.Lock.Slots,
			ReclaimStale: a.pol.Lock.StaleAfter > 0, Now: now, PreviousBootID: a.previousBootID(boot)})
		return res.State, err
	})
	if errors.Is(err, plugins.ErrNodeIDCollision) {
		// The record under this node's id belongs to another machine: this
		// node holds nothing, and must not give that machine's slot back.
		a.st.Phase, a.st.Group, a.st.SlotAcquiredAt, a.st.SlotBootID = PhaseIdle, "", time.Time{}, ""
		return false, err
	}
	if err != nil {
		// Unknown whether the grant happened: stay "acquiring" so a later
		// idle pass gives back whatever may be held.
		return false, err
	}
	for _, rc := range res.Reclaimed {
		a.log.Warn("reclaimed a stale slot", "holder", rc.ID, "deadline", rc.Deadline)
	}
	a.lockInfo(r, res.State)
	if !res.Granted {
		if a.st.Phase == PhaseAcquiring {
			a.st.Phase = PhaseIdle
		}
		a.slotRefused(r, now, res.State)
		return false, nil
	}
	if a.st.Phase == PhaseAcquiring || a.st.Phase == PhaseIdle {
		a.st.SlotAcquiredAt = now
	}
	a.st.Phase = PhaseHolding
	a.st.Group = group
	a.st.SlotBootID = boot
	if a.st.Slot == nil {
		ref := a.slotRef()
		a.st.Slot = &ref
	}
	return true, a.save()
}

// previousBootID is the boot id of this node's holder record when that was
// written in another boot than the current one.
func (a *Agent) previousBootID(boot string) string {
	for _, b := range []string{a.st.SlotBootID, a.st.RebootFromBootID} {
		if b != "" && b != boot {
			return b
		}
	}
	return ""
}

// collision reports a node id shared by two machines, loudly: in the
// decision (status), as an ERROR log line and in the result's flag
// (metrics).
func (a *Agent) collision(r *Result, err error) {
	r.NodeIDCollision = true
	a.log.Error("node id collision: another machine holds this node's slot; give each machine its own /etc/machine-id (or [node] id)",
		"node", a.opts.NodeID, "group", a.pol.Node.Group, "err", err)
	a.decide(r, DecisionBlocked, "%s; no reboot until each machine has its own node id (regenerate /etc/machine-id on clones, or set [node] id)",
		printable.String(err.Error()))
}

func (a *Agent) slotRefused(r *Result, now time.Time, st plugins.LockState) {
	r.lockRevision = st.Revision
	st, _ = redact.LockState(st) // shown: holder records may carry others' secrets
	if st.Frozen {
		a.decide(r, DecisionBlocked, "group %q is frozen%s%s; run `offpeak locks thaw --group %s` once the cause is fixed",
			st.Group, optional(" by ", printable.String(st.FrozenBy)), optional(": ", printable.String(st.FrozenReason)), st.Group)
		return
	}
	if st.Opaque {
		// The service tells no counts and cannot be watched: ask again
		// after its poll interval, jittered, on this agent's clock.
		poll := st.PollInterval
		if poll <= 0 {
			poll = a.pol.Agent.Interval.D()
		}
		at := now.Add(poll - poll/10 + time.Duration(a.rnd.Int64N(int64(poll/5)+1)))
		if r.wakeAt.IsZero() || at.Before(r.wakeAt) {
			r.wakeAt = at
		}
		r.polling = true
		answer := st.Answer
		if answer == "" {
			answer = "no slot"
		}
		a.decide(r, DecisionWaitSlot, "waiting for slot (%s answered: %s; next ask at %s)",
			a.lockService(), printable.String(answer), r.wakeAt.Format(time.RFC3339))
		return
	}
	var who []string
	for _, h := range st.Holders {
		s := printable.String(h.ID)
		if h.Hostname != "" && h.Hostname != h.ID {
			s += " (" + printable.String(h.Hostname) + ")"
		}
		if !h.AcquiredAt.IsZero() {
			s += " since " + h.AcquiredAt.Format(time.RFC3339)
		}
		who = append(who, s)
	}
	a.decide(r, DecisionWaitSlot, "waiting for slot (%d/%d held by %s)", len(st.Holders), st.Slots, strings.Join(who, ", "))
}

// lockService names the locker in a reason.
func (a *Agent) lockService() string {
	if a.pol.Lock.Plugin == "fleetlock" {
		return "FleetLock server"
	}
	return "lock service (" + a.pol.Lock.Plugin + ")"
}

func (a *Agent) lockInfo(r *Result, st plugins.LockState) {
	st, _ = redact.LockState(st) // shown: holder records may carry others' secrets
	r.Lock = &LockInfo{Slots: st.Slots, Holders: st.Holders, Frozen: st.Frozen, FrozenReason: st.FrozenReason, Opaque: st.Opaque}
	r.lockRevision = st.Revision
}

// lockCall bounds a locker call by the policy's lock timeout.
func (a *Agent) lockCall(ctx context.Context, f func(context.Context) (plugins.LockState, error)) (plugins.LockState, error) {
	c, cancel := context.WithTimeout(ctx, a.lockTimeout())
	defer cancel()
	return f(c)
}

func (a *Agent) lockTimeout() time.Duration {
	if d := a.pol.Lock.Timeout.D(); d > 0 {
		return d
	}
	return 30 * time.Second
}

// retryRelease tries an owed release again. It reports whether the pass
// may go on; if not, the decision says why.
func (a *Agent) retryRelease(ctx context.Context, r *Result) bool {
	reason := a.releaseOwed
	a.releaseIfHeld(ctx, reason)
	if a.releaseOwed == "" {
		return true
	}
	decision := DecisionBlocked
	if a.st.Phase == PhasePostBoot {
		decision = DecisionPostBoot
	}
	a.decide(r, decision, "%s; giving the slot back failed %d time(s), retrying at %s: %v",
		reason, a.releaseFails, a.releaseRetryAt.Format(time.RFC3339), a.releaseErr)
	return false
}

// releaseBackoff is the pause before retrying a failed release: 1s, 2s,
// 4s… up to a minute and the agent interval, jittered to between half and
// all of that so nodes that lost the service together do not return in step.
func (a *Agent) releaseBackoff() time.Duration {
	d := min(releaseRetryMin<<min(a.releaseFails-1, 10), releaseRetryMax)
	if iv := a.pol.Agent.Interval.D(); iv > 0 {
		d = min(d, iv)
	}
	return d/2 + time.Duration(a.rnd.Int64N(int64(d/2)+1))
}

// releaseIfHeld gives the slot back when the state says one may be held.
// When that fails the release is owed and retried soon (see retryRelease).
func (a *Agent) releaseIfHeld(ctx context.Context, reason string) {
	if !a.st.holding() || a.opts.DryRun {
		a.releaseOwed, a.releaseFails, a.releaseErr = "", 0, nil
		return
	}
	// A slot recorded in the state is given back whatever the strategy
	// says now; the strategy only decides whether to take one.
	if a.opts.Locker != nil && !a.st.Lockless && (a.st.Slot != nil || a.gates.Lock) {
		group := a.st.Group
		if group == "" {
			group = a.pol.Node.Group
		}
		c, cancel := context.WithTimeout(ctx, a.lockTimeout())
		err := a.opts.Locker.Release(c, plugins.ReleaseRequest{Group: group, ID: a.opts.NodeID, Reason: reason})
		cancel()
		if err != nil && !errors.Is(err, plugins.ErrNotHolder) {
			// Keep the phase: the slot may still be held.
			a.releaseOwed = reason
			a.releaseFails++
			a.releaseErr = err
			wait := a.releaseBackoff()
			a.releaseRetryAt = a.opts.Clock.Now().Add(wait)
			a.log.Warn("could not give the slot back; retrying soon", "group", group, "attempt", a.releaseFails, "retry_in", wait, "err", err)
			return
		}
		a.releaseOwed, a.releaseFails, a.releaseErr = "", 0, nil
		if err == nil {
			a.log.Info("slot released", "group", group, "reason", reason)
		}
	}
	a.st.Phase = PhaseIdle
	a.st.Group = ""
	a.st.SlotAcquiredAt = time.Time{}
	a.st.Lockless = false
}

func (a *Agent) backoff() time.Duration {
	base := a.pol.Agent.Interval.D()
	if base <= 0 {
		base = time.Minute
	}
	d := base << min(a.st.CheckFailures-1, 5)
	return min(d, time.Hour)
}

// budgetSpent reports whether the node used up its reboots for the period,
// and when the next one is allowed.
func (a *Agent) budgetSpent(now time.Time) (bool, time.Time) {
	b := a.pol.Budget
	if b.MaxReboots <= 0 || b.Period <= 0 {
		return false, time.Time{}
	}
	since := now.Add(-b.Period.D())
	kept := a.st.Reboots[:0]
	for _, t := range a.st.Reboots {
		if t.After(since) {
			kept = append(kept, t)
		}
	}
	a.st.Reboots = kept
	if len(kept) < b.MaxReboots {
		return false, time.Time{}
	}
	return true, kept[len(kept)-b.MaxReboots].Add(b.Period.D())
}

func (a *Agent) checksFor(phase policy.Phase) []policy.Health {
	var out []policy.Health
	for _, h := range a.pol.Health {
		if h.Phase == phase {
			out = append(out, h)
		}
	}
	return out
}

// runChecks runs the checks of a phase in order and returns the first that
// did not pass, or nil.
func (a *Agent) runChecks(ctx context.Context, phase policy.Phase, r *Result) *CheckRecord {
	node := plugins.Node{ID: a.opts.NodeID, Group: a.pol.Node.Group, Hostname: a.opts.Hostname, BootID: a.st.BootID}
	for _, h := range a.checksFor(phase) {
		rec := a.runCheck(ctx, h, node)
		if a.st.Checks == nil {
			a.st.Checks = map[string]CheckRecord{}
		}
		a.st.Checks[h.Name] = rec
		if rec.Outcome == plugins.Pass || (rec.Outcome == plugins.Error && h.OnError == policy.OnErrorPass) {
			continue
		}
		return &rec
	}
	return nil
}

func (a *Agent) runCheck(ctx context.Context, h policy.Health, node plugins.Node) CheckRecord {
	rec := CheckRecord{Name: h.Name, Plugin: h.Plugin, Phase: h.Phase}
	cfg, err := json.Marshal(h.Config)
	if err != nil {
		rec.Outcome, rec.Reason, rec.Time = plugins.Error, "config: "+err.Error(), a.opts.Clock.Now()
		return rec
	}
	attempts := 1 + max(h.Retries, 0)
	for i := range attempts {
		rec.Attempts = i + 1
		rec.Outcome, rec.Reason = a.checkOnce(ctx, h, node, cfg)
		rec.Time = a.opts.Clock.Now()
		if rec.Outcome == plugins.Pass || i == attempts-1 {
			break
		}
		if err := Sleep(ctx, a.opts.Clock, h.Interval.D()); err != nil {
			break
		}
	}
	a.log.Info("check", "name", h.Name, "phase", h.Phase, "outcome", rec.Outcome, "reason", rec.Reason, "attempts", rec.Attempts)
	return rec
}

// checkOnce runs a check under its timeout. Anything but a valid answer is
// an error outcome: a check that cannot answer never counts as a pass.
func (a *Agent) checkOnce(ctx context.Context, h policy.Health, node plugins.Node, cfg json.RawMessage) (plugins.Outcome, string) {
	if a.opts.Checks == nil {
		return plugins.Error, "no health check runner"
	}
	hc, err := a.opts.Checks(h.Plugin)
	if err != nil {
		return plugins.Error, err.Error()
	}
	timeout := h.Timeout.D()
	c, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	res, err := hc.Check(c, plugins.CheckRequest{Name: h.Name, Phase: plugins.Phase(h.Phase), Node: node, Config: cfg})
	switch {
	case ctx.Err() == nil && (c.Err() != nil || errors.Is(err, context.DeadlineExceeded)):
		// A plugin host may give up a moment before the deadline it
		// forwards; either way the check ran out of its time.
		return plugins.Error, fmt.Sprintf("timed out after %s", policy.FormatDuration(timeout))
	case err != nil:
		return plugins.Error, err.Error()
	case !res.Outcome.Valid():
		return plugins.Error, fmt.Sprintf("bad answer: outcome %q", res.Outcome)
	}
	reason := res.Reason
	if reason == "" {
		reason = string(res.Outcome)
	}
	return res.Outcome, reason
}

func (a *Agent) postBoot(ctx context.Context, now time.Time, r *Result) error {
	if a.st.PostBootSince.IsZero() {
		a.st.PostBootSince = now
	}
	if end := a.st.PostBootSince.Add(a.pol.PostBoot.Grace.D()); now.Before(end) {
		a.decide(r, DecisionPostBoot, "rebooted; post-boot checks start after the grace period, at %s", end.Format(time.RFC3339))
		r.wakeAt = end
		return nil
	}
	if failed := a.runChecks(ctx, policy.PhasePostBoot, r); failed != nil {
		return a.postBootFailed(ctx, now, r, failed)
	}
	if a.opts.Installer != nil {
		if err := a.opts.Installer.MarkGood(ctx); err != nil {
			a.decide(r, DecisionPostBoot, "post-boot checks passed but marking the boot good failed: %v; slot kept, retrying", err)
			return nil
		}
	}
	a.releaseIfHeld(ctx, "post-boot checks passed")
	if a.st.Phase != PhaseIdle {
		a.decide(r, DecisionPostBoot, "post-boot checks passed; giving the slot back failed, retrying")
		return nil
	}
	if a.gates.Lock {
		a.decide(r, DecisionIdle, "rebooted at %s; post-boot checks passed; slot released", a.st.LastReboot.Format(time.RFC3339))
	} else {
		a.decide(r, DecisionIdle, "rebooted at %s; post-boot checks passed", a.st.LastReboot.Format(time.RFC3339))
	}
	return nil
}

func (a *Agent) postBootFailed(ctx context.Context, now time.Time, r *Result, failed *CheckRecord) error {
	reason := fmt.Sprintf("post-boot check '%s' failed: %s", failed.Name, failed.Reason)
	a.st.Phase = PhaseFailed
	a.st.FailureReason = reason
	details := map[string]string{"check": failed.Name}
	if a.opts.Installer != nil {
		if err := a.opts.Installer.Rollback(ctx); err != nil {
			a.log.Error("rollback failed", "err", err)
			details["rollback"] = "failed: " + err.Error()
		} else {
			a.st.RolledBack = true
			details["rollback"] = "previous slot set to boot next"
		}
	}
	a.notify(ctx, EventPostBootFailed, reason, details)
	group := a.pol.Node.Group
	if a.opts.Locker != nil {
		c, cancel := context.WithTimeout(ctx, a.lockTimeout())
		err := a.opts.Locker.Freeze(c, plugins.FreezeRequest{Group: group, Reason: reason, By: a.opts.NodeID, At: now, Slots: a.pol.Lock.Slots})
		cancel()
		if err != nil {
			a.log.Error("could not freeze the group", "group", group, "err", err)
		} else {
			a.notify(ctx, EventGroupFrozen, reason, map[string]string{"frozen_by": a.opts.NodeID})
		}
	}
	if err := a.save(); err != nil {
		return err
	}
	a.decide(r, DecisionBlocked, "%s; slot kept and group %q frozen", reason, group)
	return nil
}

// failed: the node keeps its slot until its checks pass again (without a
// rollback) or an operator frees the slot.
func (a *Agent) failed(ctx context.Context, now time.Time, r *Result) error {
	if a.opts.Locker != nil {
		c, cancel := context.WithTimeout(ctx, a.lockTimeout())
		st, err := a.opts.Locker.Status(c, a.pol.Node.Group)
		cancel()
		if err != nil {
			r.warn = true
			a.log.Warn("lock service unreachable", "group", a.pol.Node.Group, "err", err)
		}
		if err == nil {
			a.lockInfo(r, st)
			if !st.Holds(a.opts.NodeID) {
				a.st.Phase, a.st.FailureReason, a.st.RolledBack = PhaseIdle, "", false
				a.decide(r, DecisionIdle, "slot freed by an operator after the post-boot failure")
				return nil
			}
		}
	}
	if !a.st.RolledBack {
		if failed := a.runChecks(ctx, policy.PhasePostBoot, r); failed == nil {
			if a.opts.Installer != nil {
				if err := a.opts.Installer.MarkGood(ctx); err != nil {
					a.decide(r, DecisionBlocked, "%s; checks pass now but marking good failed: %v", a.st.FailureReason, err)
					return nil
				}
			}
			a.releaseIfHeld(ctx, "post-boot checks pass again")
			a.st.FailureReason = ""
			a.decide(r, DecisionIdle, "post-boot checks pass again; slot released (the group stays frozen until thawed)")
			return nil
		}
	}
	a.decide(r, DecisionBlocked, "%s; slot kept and group %q frozen; after fixing, run `offpeak locks thaw --group %s` and `offpeak locks unlock %s --group %s`",
		a.st.FailureReason, a.pol.Node.Group, a.pol.Node.Group, a.opts.NodeID, a.pol.Node.Group)
	return nil
}

func (a *Agent) notify(ctx context.Context, kind, reason string, details map[string]string) {
	if a.opts.Notifier == nil {
		return
	}
	ev := Event{Kind: kind, Node: a.opts.NodeID, Group: a.pol.Node.Group, Time: a.opts.Clock.Now(), Reason: reason, Details: details}
	if err := a.opts.Notifier.Notify(ctx, ev); err != nil {
		a.log.Warn("notification failed", "event", kind, "err", err)
	}
}

func versionSuffix(v string) string {
	if v == "" {
		return ""
	}
	return " (" + v + ")"
}

func optional(prefix, v string) string {
	if v == "" {
		return ""
	}
	return prefix + v
}
