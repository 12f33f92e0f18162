package scheduler

import (
	"context"
	"fmt"
	"time"

	"github.com/offpeak/offpeak/plugins"
	"github.com/offpeak/offpeak/scheduler/policy"
)

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
