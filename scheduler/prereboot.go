package scheduler

import (
	"context"
	"errors"
	"time"

	"github.com/offpeak/offpeak/plugins"
	"github.com/offpeak/offpeak/scheduler/policy"
)

// preReboot is the pass of a node that is not in its post-boot phase: is
// an update staged and may it reboot now; take a slot; run the pre-reboot
// checks; then warn and reboot. Each step that says no sets the decision.
func (a *Agent) preReboot(ctx context.Context, now time.Time, boot string, r *Result) error {
	det := a.opts.Detector.Detect(ctx)
	r.Staged = &StagedInfo{State: det.State.String(), Version: det.Version, Reason: det.Reason, Backend: det.Backend, BootedVersion: det.Booted}
	if !a.admit(ctx, now, det, r) {
		return nil
	}
	lockless, ok := a.takeSlot(ctx, now, boot, det, r)
	if !ok {
		return nil
	}
	if !a.preRebootChecks(ctx, r) {
		return nil
	}
	if a.opts.DryRun {
		a.decide(r, DecisionReboot, "would reboot now%s (dry run)%s", versionSuffix(det.Version), a.rebootContext(r, lockless))
		a.log.Info("dry run: would reboot", "node", a.opts.NodeID, "group", a.pol.Node.Group)
		return nil
	}
	return a.warnAndReboot(ctx, boot, det, r, lockless)
}

// admit applies the gates before a slot is asked for: an update is staged,
// the strategy reboots, the reboot budget is not spent, the pre-reboot
// checks are not backing off, and the window is open. It reports whether
// the pass may go on; if not, the decision says why and a slot that may be
// held is given back where the gate calls for it.
func (a *Agent) admit(ctx context.Context, now time.Time, det Detection, r *Result) bool {
	switch det.State {
	case StagedNo:
		a.releaseIfHeld(ctx, "no update staged")
		a.st.CheckFailures, a.st.BackoffUntil = 0, time.Time{}
		a.decide(r, DecisionIdle, "no update staged")
		return false
	case StagedUnknown:
		a.releaseIfHeld(ctx, "staged state unknown")
		a.decide(r, DecisionBlocked, "cannot tell whether an update is staged: %s", det.Reason)
		return false
	}
	if !a.gates.Reboots {
		a.releaseIfHeld(ctx, "strategy off")
		a.decide(r, DecisionBlocked, "update staged%s; strategy %q never reboots", versionSuffix(det.Version), a.pol.Strategy)
		return false
	}
	if spent, next := a.budgetSpent(now); spent {
		a.releaseIfHeld(ctx, "reboot budget spent")
		a.decide(r, DecisionBlocked, "reboot budget spent: %d reboots in the last %s; next reboot allowed after %s",
			a.pol.Budget.MaxReboots, policy.FormatDuration(a.pol.Budget.Period.D()), next.Format(time.RFC3339))
		r.wakeAt = next
		return false
	}
	if now.Before(a.st.BackoffUntil) {
		a.decide(r, DecisionWaitHealth, "pre-reboot checks failed %d time(s); retrying after %s", a.st.CheckFailures, a.st.BackoffUntil.Format(time.RFC3339))
		r.wakeAt = a.st.BackoffUntil
		return false
	}
	return a.windowOpen(ctx, now, r, beforeSlot)
}

// takeSlot asks for a slot when the strategy takes one, and looks at the
// window again once it is held. It reports whether the pass may go on and
// whether it goes on without a slot (best-effort, locker unreachable).
func (a *Agent) takeSlot(ctx context.Context, now time.Time, boot string, det Detection, r *Result) (lockless, ok bool) {
	if !a.gates.Lock {
		return false, true
	}
	wasHolding := a.st.holding()
	granted, err := a.acquire(ctx, now, boot, det, r)
	switch {
	case errors.Is(err, plugins.ErrNodeIDCollision):
		// Never a lockless fallback: the locker answered, and the
		// answer is that another machine holds this node's slot.
		a.collision(r, err)
		return false, false
	case err != nil && a.gates.LockOptional && !wasHolding:
		a.log.Warn("locker unreachable; best-effort strategy reboots without a slot", "err", err)
		r.warn = true
		lockless = true
		a.st.Lockless = true
	case err != nil:
		r.warn = true
		a.decide(r, DecisionWaitSlot, "locker unavailable: %v", err)
		return false, false
	case !granted:
		return false, false
	}
	return lockless, a.windowOpen(ctx, a.opts.Clock.Now(), r, afterSlot)
}

// preRebootChecks runs the pre-reboot checks; a failure gives the slot back
// and backs off. It then looks at the window again. It reports whether the
// pass may go on.
func (a *Agent) preRebootChecks(ctx context.Context, r *Result) bool {
	if failed := a.runChecks(ctx, policy.PhasePreReboot, r); failed != nil {
		a.releaseIfHeld(ctx, "pre-reboot check failed")
		a.st.CheckFailures++
		a.st.BackoffUntil = a.opts.Clock.Now().Add(a.backoff())
		a.decide(r, DecisionWaitHealth, "check '%s' failed: %s", failed.Name, failed.Reason)
		return false
	}
	a.st.CheckFailures, a.st.BackoffUntil = 0, time.Time{}
	return a.windowOpen(ctx, a.opts.Clock.Now(), r, afterChecks)
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
