package scheduler

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/offpeak/offpeak/scheduler/policy"
)

// warnAndReboot is the end of the pass: warn logged-in users, wait for
// shutdown inhibitors, tell the webhook, look at the window one last time
// and reboot. Those waits can take minutes, so each is announced as it
// starts; after the last window check nothing waits.
func (a *Agent) warnAndReboot(ctx context.Context, boot string, det Detection, r *Result, lockless bool) error {
	version := versionSuffix(det.Version)
	if err := a.warnUsers(ctx, r, version, lockless); err != nil {
		return err
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

// warnUsers broadcasts the coming reboot and waits the policy's warning
// delay, if it sets one. An error means the agent was stopped meanwhile:
// the announced reboot is off and the decision says so.
func (a *Agent) warnUsers(ctx context.Context, r *Result, version string, lockless bool) error {
	warn := a.pol.Reboot.Warn.D()
	if warn <= 0 {
		return nil
	}
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
	return nil
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
