package scheduler_test

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/offpeak/offpeak/internal/dbustest"
	"github.com/offpeak/offpeak/internal/logind"
	"github.com/offpeak/offpeak/internal/logind/logindtest"
	"github.com/offpeak/offpeak/internal/reboot"
	"github.com/offpeak/offpeak/scheduler"
)

// TestAgentRebootsThroughLogind drives the agent with the real Rebooter
// against a test logind on a private dbus-daemon: Reboot is called once,
// non-interactively, and a refusal from logind ends up in the state.
func TestAgentRebootsThroughLogind(t *testing.T) {
	for _, tt := range []struct {
		name    string
		refuse  bool
		want    scheduler.Decision
		calls   []bool
		inState string
	}{
		{"reboot", false, scheduler.DecisionReboot, []bool{false}, ""},
		{"refused", true, scheduler.DecisionBlocked, []bool{false}, logind.ErrNameAccessDenied},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := dbustest.New(t)
			srv := logindtest.Start(t, d)
			if tt.refuse {
				srv.SetRebootError(logind.ErrNameAccessDenied, "Interactive authentication required.")
			}
			h := newHarness(t, "2025-06-03T02:10:00Z")
			n := &node{id: "node-a", staged: true}
			ag := h.agent(n, basePolicy, func(o *scheduler.Options) {
				o.Rebooter = &reboot.Rebooter{Logind: logind.New(d.Conn(t)), IgnoreInhibitors: true, Clock: h.clock}
			})
			r := step(t, ag)
			if r.Decision != tt.want {
				t.Fatalf("decision %s (%s)", r.Decision, r.Reason)
			}
			if got := srv.RebootCalls(); !reflect.DeepEqual(got, tt.calls) {
				t.Fatalf("logind Reboot calls %v, want %v", got, tt.calls)
			}
			st := ag.State()
			if !strings.Contains(st.RebootError, tt.inState) || (tt.inState == "") != (st.RebootError == "") {
				t.Fatalf("state reboot error %q, want %q", st.RebootError, tt.inState)
			}
			if tt.refuse && (st.Phase != scheduler.PhaseIdle || !strings.Contains(r.Reason, "reboot failed")) {
				t.Fatalf("phase %s, reason %q", st.Phase, r.Reason)
			}
		})
	}
}

// TestAgentWaitsForBlockInhibitor: a "block" shutdown inhibitor held longer
// than max_inhibit_wait holds the reboot back (and the slot is given back);
// once it is released the reboot proceeds.
func TestAgentWaitsForBlockInhibitor(t *testing.T) {
	d := dbustest.New(t)
	srv := logindtest.Start(t, d)
	srv.SetInhibitors([]logind.Inhibitor{{What: "shutdown:sleep", Who: "backup-job", Why: "writing the nightly dump", Mode: "block", UID: 0, PID: 4242}})
	h := newHarness(t, "2025-06-03T02:10:00Z")
	h.clock.SetAutoAdvance(true) // the inhibitor wait runs on the agent's clock
	n := &node{id: "node-a", staged: true}
	obs := make(chanObserver, 8)
	ag := h.agent(n, basePolicy+"[reboot]\nmax_inhibit_wait = \"10m\"\n", func(o *scheduler.Options) {
		o.Rebooter = &reboot.Rebooter{Logind: logind.New(d.Conn(t)), IgnoreInhibitors: true, Clock: h.clock}
		o.Observer = obs
	})
	r := step(t, ag)
	want(t, r, scheduler.DecisionBlocked, "backup-job: writing the nightly dump")
	// While it waited, status said why the reboot had not happened yet.
	want(t, <-obs, scheduler.DecisionReboot, "rebooting (2.0) when shutdown is no longer inhibited (waiting up to 10m); blocked by inhibitor: backup-job")
	want(t, <-obs, scheduler.DecisionBlocked, "backup-job")
	if len(srv.RebootCalls()) != 0 || r.HoldingSlot {
		t.Fatalf("rebooted %v / holding %v while inhibited", srv.RebootCalls(), r.HoldingSlot)
	}
	if waited := h.clock.Now().Sub(mustTime(t, "2025-06-03T02:10:00Z")); waited < 10*time.Minute {
		t.Fatalf("gave up after %s, before max_inhibit_wait", waited)
	}
	srv.SetInhibitors(nil)
	want(t, step(t, ag), scheduler.DecisionReboot, "rebooting")
	// Nothing to wait for: one result, no interim one.
	want(t, <-obs, scheduler.DecisionReboot, "rebooting")
	if len(obs) != 0 {
		t.Fatalf("%d more results observed: %+v", len(obs), <-obs)
	}
	if got := srv.RebootCalls(); !reflect.DeepEqual(got, []bool{false}) {
		t.Fatalf("logind Reboot calls %v", got)
	}
}

func mustTime(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
