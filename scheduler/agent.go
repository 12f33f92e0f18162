package scheduler

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

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

// decide sets the pass's decision and its reason.
func (a *Agent) decide(r *Result, decision Decision, format string, args ...any) {
	r.Decision = decision
	r.Reason = fmt.Sprintf(format, args...)
}

// step is one pass, by phase: a reboot asked for either happened (a new
// boot id: post-boot) or is still awaited; a slot held where the policy no
// longer places it, or a release still owed, blocks the pass; then the
// post-boot phase (postBoot), a failed boot (failed), or the way to a
// reboot (preReboot).
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

// notify sends an event through the notifier, if there is one; a failure
// is logged, never fatal.
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
