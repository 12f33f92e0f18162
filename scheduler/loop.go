package scheduler

import (
	"context"
	"errors"
	"time"

	"github.com/offpeak/offpeak/plugins"
)

// minWake keeps the loop from spinning whatever the computed wake time.
const minWake = time.Second

// waitRetry paces passes while the locker's watch fails.
const waitRetry = 10 * time.Second

// Run evaluates the pipeline until ctx ends: on a jittered period, at each
// window edge, when the locker's state changes while waiting for a slot, and
// when the policy is reloaded.
func (a *Agent) Run(ctx context.Context) error {
	for {
		r, err := a.Step(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			a.log.Error("pass failed", "err", err)
		}
		now := a.opts.Clock.Now()
		wake := a.nextWake(now, r)
		timer := a.opts.Clock.After(wake.Sub(now))

		wctx, cancel := context.WithCancel(ctx)
		changed := make(chan struct{}, 1)
		// A reload may replace the locker and node id: the watch keeps the
		// ones of the pass it follows, and a reload ends it.
		a.mu.Lock()
		locker, nodeID, dryRun := a.opts.Locker, a.opts.NodeID, a.opts.DryRun
		a.mu.Unlock()
		if Watches(r) && locker != nil && !dryRun {
			go a.watch(wctx, locker, r, nodeID, changed)
		}
		select {
		case <-ctx.Done():
			cancel()
			return nil
		case <-timer:
		case <-changed:
			// A failing Wait would spin; let the timer pace retries then.
			if wctx.Err() == nil && a.opts.Clock.Now().Sub(now) < minWake {
				select {
				case <-ctx.Done():
				case <-a.opts.Clock.After(minWake):
				case <-timer:
				}
			}
		case <-a.reload:
		}
		cancel()
	}
}

// watch waits on the locker after pass r until a change wakes the node
// (Wakes), then signals changed. A Wait that fails signals after a pause,
// so the loop does not spin on a locker that cannot watch right now.
func (a *Agent) watch(ctx context.Context, locker Locker, r Result, nodeID string, changed chan<- struct{}) {
	wasFrozen := r.Lock != nil && r.Lock.Frozen
	rev := r.lockRevision
	for {
		st, err := locker.Wait(ctx, r.Group, rev)
		if err != nil {
			if errors.Is(err, context.Canceled) {
				return
			}
			select {
			case <-ctx.Done():
			case <-a.opts.Clock.After(waitRetry):
				changed <- struct{}{}
			}
			return
		}
		if Wakes(st, nodeID, wasFrozen) {
			changed <- struct{}{}
			return
		}
		rev = st.Revision
	}
}

// Watches reports whether the loop watches the locker after a pass that
// decided r, instead of waiting for its next period: while the node waits
// for a slot, or is blocked by a frozen group, on a locker that can be
// watched (not Opaque).
func Watches(r Result) bool {
	frozen := r.Lock != nil && r.Lock.Frozen
	opaque := r.Lock != nil && r.Lock.Opaque
	return (r.Decision == DecisionWaitSlot || (r.Decision == DecisionBlocked && frozen)) && !opaque
}

// Wakes is the wake rule: whether lock state st, seen by a watch opened
// after a pass that saw the group frozen (wasFrozen) or not, wakes node.
// It does when the group was frozen or thawed since, when node holds a
// slot, or when a slot is free in a group not frozen. A change that frees
// nothing for node (another waiter took the slot) does not, so a crowd of
// waiters does not stampede the locker on every hand-off.
func Wakes(st plugins.LockState, node string, wasFrozen bool) bool {
	return st.Frozen != wasFrozen || st.Holds(node) || (!st.Frozen && len(st.Holders) < st.Slots)
}

// NextWake returns when the loop would evaluate again after r, for drivers
// that run the pipeline themselves (the simulator).
func (a *Agent) NextWake(now time.Time, r Result) time.Time { return a.nextWake(now, r) }

// LockRevision is the locker revision seen by the pass, for Locker.Wait.
func (r Result) LockRevision() uint64 { return r.lockRevision }

// nextWake picks the next evaluation: the regular period with jitter, or
// earlier when something is due (a window opens or reaches its cutoff, the
// grace period ends).
func (a *Agent) nextWake(now time.Time, r Result) time.Time {
	a.mu.Lock()
	interval := a.pol.Agent.Interval.D()
	jitter := a.pol.Agent.Jitter.D()
	var j time.Duration
	if jitter > 0 {
		j = time.Duration(a.rnd.Int64N(int64(2*jitter))) - jitter
	}
	a.mu.Unlock()
	wake := now.Add(interval + j)
	if !r.wakeAt.IsZero() && r.wakeAt.After(now) && (r.wakeAt.Before(wake) || r.polling) {
		wake = r.wakeAt
	}
	if wake.Sub(now) < minWake {
		wake = now.Add(minWake)
	}
	return wake
}
