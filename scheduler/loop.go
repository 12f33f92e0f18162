package scheduler

import (
	"context"
	"errors"
	"time"
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
		frozen := r.Lock != nil && r.Lock.Frozen
		opaque := r.Lock != nil && r.Lock.Opaque
		// A reload may replace the locker and node id: the watch keeps the
		// ones of the pass it follows, and a reload ends it.
		a.mu.Lock()
		locker, nodeID, dryRun := a.opts.Locker, a.opts.NodeID, a.opts.DryRun
		a.mu.Unlock()
		if (r.Decision == DecisionWaitSlot || (r.Decision == DecisionBlocked && frozen)) && !opaque && locker != nil && !dryRun {
			// Watch instead of polling: a freed slot or a thaw wakes the
			// loop at once. Changes that free nothing for this node (another
			// waiter took the slot) do not, so a crowd of waiters does not
			// stampede the locker on every hand-off.
			go func() {
				rev := r.lockRevision
				for {
					st, err := locker.Wait(wctx, r.Group, rev)
					if err != nil {
						if errors.Is(err, context.Canceled) {
							return
						}
						// The locker cannot watch right now: try again
						// after a pause instead of spinning on it.
						select {
						case <-wctx.Done():
						case <-a.opts.Clock.After(waitRetry):
							changed <- struct{}{}
						}
						return
					}
					if st.Frozen != frozen || st.Holds(nodeID) || (!st.Frozen && len(st.Holders) < st.Slots) {
						changed <- struct{}{}
						return
					}
					rev = st.Revision
				}
			}()
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
