package scheduler_test

import (
	"context"
	"encoding/json"
	"errors"
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

// A state file the agent cannot account for is corrupt, like a truncated
// one: read as idle, a node that was mid-reboot would take a slot again and
// forget its reboot history. Files earlier versions wrote still load.
func TestUnknownStateContentRefusesToStart(t *testing.T) {
	corrupt := []struct{ name, content, why string }{
		{"null", "null", "null"},
		{"empty object", "{}", "no phase"},
		{"unknown phase", `{"phase":"sleeping"}`, `unknown phase "sleeping"`},
		{"empty phase", `{"phase":""}`, "no phase"},
		{"unknown key", `{"phase":"idle","slot_taken_at":"2025-06-03T02:00:00Z"}`, `unknown key "slot_taken_at"`},
		{"array", `[]`, "cannot unmarshal"},
	}
	for _, tt := range corrupt {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "state.json")
			if err := statefile.WriteAtomic(p, []byte(tt.content), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := scheduler.New(scheduler.Options{Policy: mustPolicy(t, basePolicy), NodeID: "n", Locker: newFileLocker(t, t.TempDir()), Store: statefile.File{Path: p}})
			if !errors.Is(err, statefile.ErrCorrupt) || !strings.Contains(err.Error(), tt.why) || !strings.Contains(err.Error(), p) {
				t.Fatalf("%s: got %v; want statefile.ErrCorrupt naming %s and %q", tt.content, err, p, tt.why)
			}
		})
	}
	valid := []struct {
		name, content string
		phase         scheduler.Phase
	}{
		{"idle", `{"phase":"idle"}`, scheduler.PhaseIdle},
		{"rebooting", `{"phase":"rebooting","group":"web","slot_acquired_at":"2025-06-03T02:10:00Z","boot_id":"b1","reboot_from_boot_id":"b1",` +
			`"reboot_requested_at":"2025-06-03T02:11:00Z","reboots":["2025-06-03T02:11:00Z"],"last":{"decision":"reboot","reason":"rebooting",` +
			`"next_window":null,"holding_slot":true,"phase":"rebooting","strategy":"window","node":"n","group":"web","time":"2025-06-03T02:11:00Z"}}`,
			scheduler.PhaseRebooting},
		{"failed", `{"phase":"failed","group":"web","failure_reason":"post-boot check 'api' failed","rolled_back":true,` +
			`"checks":{"api":{"name":"api","plugin":"exec","phase":"post-boot","outcome":"fail","reason":"exit 1","time":"2025-06-03T02:20:00Z","attempts":1}}}`,
			scheduler.PhaseFailed},
	}
	for _, tt := range valid {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "state.json")
			if err := statefile.WriteAtomic(p, []byte(tt.content), 0o644); err != nil {
				t.Fatal(err)
			}
			a, err := scheduler.New(scheduler.Options{Policy: mustPolicy(t, basePolicy), NodeID: "n", Locker: newFileLocker(t, t.TempDir()), Store: statefile.File{Path: p}})
			if err != nil {
				t.Fatal(err)
			}
			if got := a.State().Phase; got != tt.phase {
				t.Fatalf("phase %q, want %q", got, tt.phase)
			}
		})
	}
}

// Whatever a state file holds, reading it never panics, and what it accepts
// is written back as a file it accepts again.
func FuzzStateUnmarshal(f *testing.F) {
	for _, s := range []string{`null`, `{}`, `{"phase":"idle"}`, `{"phase":"holding","group":"web"}`, `{"phase":"x"}`, `[1]`, `{"phase":"idle","last":null}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var st scheduler.State
		if err := json.Unmarshal(b, &st); err != nil {
			return
		}
		out, err := json.Marshal(&st)
		if err != nil {
			t.Fatal(err)
		}
		var again scheduler.State
		if err := json.Unmarshal(out, &again); err != nil || again.Phase != st.Phase {
			t.Fatalf("%s accepted, but its encoding %s is not: %v", b, out, err)
		}
	})
}

// newEtcdLocker configures the etcd locker against srv with short
// timeouts, so calls to a stopped server fail quickly.
func newEtcdLocker(t *testing.T, srv *etcdtest.Server) plugins.Locker {
	t.Helper()
	l := etcdlocker.New(nil)
	cfg, err := json.Marshal(map[string]any{"endpoints": srv.Endpoints, "dial_timeout": "1s", "request_timeout": "1s"})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Configure(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.(interface{ Close() error }).Close() })
	return l
}

// A release that fails while the lock service is down is retried after
// 1s, 2s, 4s… (jittered), not after the agent's 5m interval, so the slot is
// free moments after the service is back.
func TestFailedReleaseRetriedSoonWithBackoff(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	h := newHarness(t, "2025-06-03T02:10:00Z")
	n := &node{id: "node-a", staged: true}
	pol := strings.Replace(basePolicy, `plugin = "file"`, "plugin = \"etcd\"\ntimeout = \"3s\"", 1) + "[agent]\ninterval = \"5m\"\njitter = \"30s\"\n"
	ag := h.agent(n, pol, func(o *scheduler.Options) { o.Locker = newEtcdLocker(t, srv) })
	want(t, step(t, ag), scheduler.DecisionReboot, "rebooting")
	n.bootUp()
	want(t, step(t, ag), scheduler.DecisionPostBoot, "grace")
	h.clock.Advance(2 * time.Minute)

	srv.Stop() // quorum gone just as the post-boot checks pass
	var r scheduler.Result
	for i := range 4 {
		r = step(t, ag)
		if !r.HoldingSlot || !strings.Contains(r.Reason, "giving the slot back failed") {
			t.Fatalf("attempt %d: %s (%s), holding %v", i+1, r.Decision, r.Reason, r.HoldingSlot)
		}
		now := h.clock.Now()
		wait := ag.NextWake(now, r).Sub(now)
		// Attempt k waits up to 2^(k-1) s (at least the loop's 1s floor).
		if limit := time.Second << i; wait < time.Second/2 || wait > limit {
			t.Fatalf("attempt %d: next try in %s, want at most %s (the interval is 5m)", i+1, wait, limit)
		}
		h.clock.Advance(wait)
	}

	srv.Restart()
	// The client reconnects with its own backoff: the first retries after
	// the restart may still fail; each comes at most a minute later.
	for i := 0; i < 60; i++ {
		if r = step(t, ag); !r.HoldingSlot {
			break
		}
		now := h.clock.Now()
		if wait := ag.NextWake(now, r).Sub(now); wait > time.Minute {
			t.Fatalf("retry %d after the restart waits %s", i+1, wait)
		} else {
			h.clock.Advance(wait)
		}
	}
	if r.HoldingSlot || ag.State().Phase != scheduler.PhaseIdle {
		t.Fatalf("after the lock service came back: %s (%s), holding %v", r.Decision, r.Reason, r.HoldingSlot)
	}
	st, err := newEtcdLocker(t, srv).Status(t.Context(), "web")
	if err != nil || len(st.Holders) != 0 {
		t.Fatalf("etcd still shows holders %+v (err %v)", st.Holders, err)
	}
}

// While a slot is held, a reload that changes where or as whom it lives is
// refused with ErrSlotHeld; other changes (credentials, timeouts, the slot
// count) are taken, and with no slot held everything is.
func TestReloadWhileHolding(t *testing.T) {
	base := basePolicy + "[lock.config]\ndir = \"/locks\"\npassword = \"s3cr3t-1\"\n"
	tests := []struct {
		name, from, to string
		id             string
		refused        bool
	}{
		{"other locker", `plugin = "file"`, `plugin = "etcd"`, "node-a", true},
		{"other group", `group = "web"`, `group = "db"`, "node-a", true},
		{"other node id", "", "", "node-b", true},
		{"other lock directory", `dir = "/locks"`, `dir = "/other"`, "node-a", true},
		{"rotated password", `password = "s3cr3t-1"`, `password = "s3cr3t-2"`, "node-a", false},
		{"more slots", `slots = 1`, `slots = 2`, "node-a", false},
		{"other window", `start = "0 2 * * *"`, `start = "0 3 * * *"`, "node-a", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, "2025-06-03T02:10:00Z")
			n := &node{id: "node-a", staged: true}
			ag := h.agent(n, base, nil)
			next := scheduler.Components{Policy: mustPolicy(t, strings.Replace(base, tt.from, tt.to, 1)), NodeID: tt.id,
				Locker: newFileLocker(t, h.lockd), Detector: n, Rebooter: n}
			if err := ag.Reload(next); err != nil {
				t.Fatalf("refused with no slot held: %v", err)
			}
			ag = h.agent(n, base, nil)
			want(t, step(t, ag), scheduler.DecisionReboot, "rebooting")
			err := ag.Reload(next)
			if tt.refused != errors.Is(err, scheduler.ErrSlotHeld) {
				t.Fatalf("reload while holding: %v (want refused: %v)", err, tt.refused)
			}
			if err != nil && strings.Contains(err.Error(), "s3cr3t") {
				t.Fatalf("the refusal names a credential: %v", err)
			}
		})
	}
}
