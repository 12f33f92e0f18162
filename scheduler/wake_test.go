package scheduler_test

import (
	"testing"

	"github.com/offpeak/offpeak/plugins"
	"github.com/offpeak/offpeak/scheduler"
)

// TestWakeRule pins the rule the agent loop and the simulator share: what
// a watch wakes for, and after which passes the loop watches at all.
func TestWakeRule(t *testing.T) {
	held := func(ids ...string) []plugins.Holder {
		var hs []plugins.Holder
		for _, id := range ids {
			hs = append(hs, plugins.Holder{ID: id})
		}
		return hs
	}
	for _, tc := range []struct {
		name      string
		st        plugins.LockState
		wasFrozen bool
		wake      bool
	}{
		{"a slot freed", plugins.LockState{Slots: 2, Holders: held("b")}, false, true},
		{"another waiter took the last slot", plugins.LockState{Slots: 1, Holders: held("b")}, false, false},
		{"granted to this node", plugins.LockState{Slots: 1, Holders: held("a")}, false, true},
		{"frozen since the pass", plugins.LockState{Slots: 1, Holders: held("b"), Frozen: true}, false, true},
		{"thawed since the pass", plugins.LockState{Slots: 1, Holders: held("b")}, true, true},
		{"still frozen, free slot", plugins.LockState{Slots: 2, Holders: held("b"), Frozen: true}, true, false},
		{"still frozen, this node holds", plugins.LockState{Slots: 1, Holders: held("a"), Frozen: true}, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := scheduler.Wakes(tc.st, "a", tc.wasFrozen); got != tc.wake {
				t.Fatalf("Wakes = %v, want %v", got, tc.wake)
			}
		})
	}
	for _, tc := range []struct {
		name  string
		r     scheduler.Result
		watch bool
	}{
		{"waiting for a slot", scheduler.Result{Decision: scheduler.DecisionWaitSlot, Lock: &scheduler.LockInfo{}}, true},
		{"waiting, locker never answered", scheduler.Result{Decision: scheduler.DecisionWaitSlot}, true},
		{"waiting on a FleetLock server", scheduler.Result{Decision: scheduler.DecisionWaitSlot, Lock: &scheduler.LockInfo{Opaque: true}}, false},
		{"blocked by a frozen group", scheduler.Result{Decision: scheduler.DecisionBlocked, Lock: &scheduler.LockInfo{Frozen: true}}, true},
		{"blocked otherwise", scheduler.Result{Decision: scheduler.DecisionBlocked, Lock: &scheduler.LockInfo{}}, false},
		{"outside the window", scheduler.Result{Decision: scheduler.DecisionWaitWindow}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := scheduler.Watches(tc.r); got != tc.watch {
				t.Fatalf("Watches = %v, want %v", got, tc.watch)
			}
		})
	}
}
