package scheduler_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/offpeak/offpeak/lockers/fleetlock"
	"github.com/offpeak/offpeak/scheduler"
)

// Against a plain FleetLock server (no watch, no counts) a waiting node asks
// again every poll_interval, jittered, on the agent's clock, and its status
// says what the server answered and when it asks next (#14).
func TestFleetlockWaiterPollsAtPollInterval(t *testing.T) {
	var asks atomic.Int32
	full := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == fleetlock.PathPreReboot {
			asks.Add(1)
		}
		// airlock's answers: a full semaphore, and 404 for what it lacks.
		if r.URL.Path != fleetlock.PathPreReboot {
			http.NotFound(w, r)
			return
		}
		http.Error(w, `{"kind":"failed_lock","value":"all 1 semaphore slots currently locked"}`, http.StatusInternalServerError)
	}))
	defer full.Close()
	cl := fleetlock.New(nil)
	raw, _ := json.Marshal(map[string]any{"url": full.URL, "poll_interval": "1m", "max_retries": 0})
	if err := cl.Configure(context.Background(), raw); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, "2025-06-03T02:10:00Z")
	pol := strings.Replace(basePolicy, `plugin = "file"`, `plugin = "fleetlock"`, 1)
	results := make(chan scheduler.Result, 16)
	ag := h.agent(&node{id: "node-a", staged: true}, pol, func(o *scheduler.Options) {
		o.Locker = cl
		o.Observer = chanObserver(results)
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- ag.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	for i := 1; i <= 3; i++ {
		var r scheduler.Result
		select {
		case r = <-results:
		case <-ctx.Done():
			t.Fatalf("no decision for ask %d", i)
		}
		want(t, r, scheduler.DecisionWaitSlot, "all 1 semaphore slots currently locked")
		if strings.Contains(r.Reason, "0/0") || !strings.Contains(r.Reason, "next ask at") {
			t.Fatalf("reason %q; want the server's answer and the next ask, not a 0/0 count", r.Reason)
		}
		if err := h.clock.WaitForTimers(ctx, 1); err != nil {
			t.Fatal(err)
		}
		now := h.clock.Now()
		next, _ := h.clock.NextTimer()
		if d := next.Sub(now); d < 54*time.Second || d > 66*time.Second {
			t.Fatalf("ask %d: next pass in %s; want poll_interval 1m ± 10%%", i, d)
		}
		if got := int(asks.Load()); got != i {
			t.Fatalf("%d pre-reboot requests after %d passes", got, i)
		}
		h.clock.Set(next)
	}
}
