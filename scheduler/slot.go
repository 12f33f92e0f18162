package scheduler

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/offpeak/offpeak/internal/printable"
	"github.com/offpeak/offpeak/internal/redact"
	"github.com/offpeak/offpeak/plugins"
)

// Release retries back off from releaseRetryMin, doubling up to
// releaseRetryMax (and never beyond the agent interval).
const (
	releaseRetryMin = time.Second
	releaseRetryMax = time.Minute
)

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
		return a.slotFree(ctx, now, h, boot, r)
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

// slotFree is acquire in a dry run: it only reads the group and reports
// whether the slot would be granted (the node holds it, or one is free in
// a group not frozen).
func (a *Agent) slotFree(ctx context.Context, now time.Time, h plugins.Holder, boot string, r *Result) (bool, error) {
	st, err := a.lockCall(ctx, func(c context.Context) (plugins.LockState, error) { return a.opts.Locker.Status(c, a.pol.Node.Group) })
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
