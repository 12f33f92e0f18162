package scheduler_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/offpeak/offpeak/internal/statefile"
	etcdlocker "github.com/offpeak/offpeak/lockers/etcd"
	"github.com/offpeak/offpeak/lockers/etcd/etcdtest"
	"github.com/offpeak/offpeak/plugins"
	"github.com/offpeak/offpeak/scheduler"
)

func etcdLocker(t *testing.T, srv *etcdtest.Server) plugins.Locker {
	t.Helper()
	l := etcdlocker.New(nil)
	raw, _ := json.Marshal(map[string]any{"endpoints": srv.Endpoints, "request_timeout": "10s"})
	if err := l.Configure(context.Background(), raw); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.(interface{ Close() error }).Close() })
	return l
}

// Two hosts cloned from one image share /etc/machine-id, so one node id.
// Against a real etcd exactly one of them reboots; the other refuses, and
// its status says "node id collision" (#14).
func TestNodeIDCollision(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	cases := []struct {
		name, policy, cloneHost string
	}{
		{"clone with the same hostname", basePolicy, ""},
		{"clone with another hostname", basePolicy, "clone.example"},
		{"best-effort never falls back to a lockless reboot", strings.Replace(basePolicy, `strategy = "window"`, `strategy = "best-effort"`, 1), ""},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t, "2025-06-03T02:10:00Z")
			pol := strings.Replace(c.policy, `group = "web"`, `group = "web`+string(rune('0'+i))+`"`, 1)
			orig, clone := &node{id: "node-a", staged: true}, &node{id: "node-a", staged: true}
			agentOrig := h.agent(orig, pol, func(o *scheduler.Options) { o.Locker = etcdLocker(t, srv) })
			var logs strings.Builder
			agentClone := h.agent(clone, pol, func(o *scheduler.Options) {
				o.Locker = etcdLocker(t, srv)
				o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
				o.BootID = func() (string, error) { return "clone-boot", nil }
				if c.cloneHost != "" {
					o.Hostname = c.cloneHost
				}
			})
			want(t, step(t, agentOrig), scheduler.DecisionReboot, "rebooting")
			r := step(t, agentClone)
			if orig.rebootCount()+clone.rebootCount() != 1 {
				t.Fatalf("reboots: original %d, clone %d; want exactly one in all (clone said %s: %s)",
					orig.rebootCount(), clone.rebootCount(), r.Decision, r.Reason)
			}
			want(t, r, scheduler.DecisionBlocked, "node id collision")
			for _, s := range []string{"node-a", "node-a-boot-a"} {
				if !strings.Contains(r.Reason, s) {
					t.Errorf("reason %q does not name %q", r.Reason, s)
				}
			}
			if !r.NodeIDCollision {
				t.Error("the result does not flag the collision (offpeak_node_id_collision)")
			}
			if !strings.Contains(logs.String(), `level=ERROR msg="node id collision`) {
				t.Errorf("no ERROR log line for the collision:\n%s", logs.String())
			}
			if r.HoldingSlot || agentClone.State().Phase != scheduler.PhaseIdle {
				t.Fatalf("clone thinks it may hold the slot: holding %v, phase %s", r.HoldingSlot, agentClone.State().Phase)
			}
			// The original, back from its reboot, finishes normally: its
			// new boot id is not a collision with its own record.
			orig.bootUp()
			want(t, step(t, agentOrig), scheduler.DecisionPostBoot, "grace")
			h.clock.Advance(2 * time.Minute)
			want(t, step(t, agentOrig), scheduler.DecisionIdle, "slot released")
		})
	}
}

// A node that reboots while it holds its slot (power loss during the warning
// delay, say) comes back with a new boot id; its own record of the earlier
// boot is not a collision: the agent names that boot (PreviousBootID).
func TestOwnRecordAfterUnplannedRebootIsNoCollision(t *testing.T) {
	h := newHarness(t, "2025-06-03T02:10:00Z")
	pol := strings.Replace(basePolicy, "[post_boot]", "[reboot]\nwarn = \"5m\"\n[post_boot]", 1)
	n := &node{id: "node-a", staged: true}
	store := statefile.File{Path: filepath.Join(t.TempDir(), "state.json")}
	ag := h.agent(n, pol, func(o *scheduler.Options) { o.Store = store })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, err := ag.Step(ctx); done <- err }()
	if err := h.clock.WaitForTimers(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	cancel() // the power goes during the warning delay
	<-done
	if st := ag.State(); st.Phase != scheduler.PhaseHolding || st.SlotBootID != "node-a-boot-a" {
		t.Fatalf("state before the power loss = %s, slot boot %q", st.Phase, st.SlotBootID)
	}
	n.bootUp()
	n.mu.Lock()
	n.staged = true
	n.mu.Unlock()
	h.clock.SetAutoAdvance(true)
	back := h.agent(n, pol, func(o *scheduler.Options) { o.Store = store })
	want(t, step(t, back), scheduler.DecisionReboot, "rebooting")
	if n.rebootCount() != 1 {
		t.Fatalf("%d reboots, want 1", n.rebootCount())
	}
}
