package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/offpeak/offpeak/scheduler"
)

// simNode is one host in a scenario: its own root (state, boot id, hold
// files), a shared lock directory, and agents built the way `offpeak agent`
// builds them, so checks run as real plugin processes.
type simNode struct {
	t      *testing.T
	id     string
	root   string
	app    *App
	rb     *recordingRebooter
	clock  *scheduler.FakeClock
	policy string
	boots  int
	rt     *runtime
}

func newSimNode(t *testing.T, id, shared string, clock *scheduler.FakeClock, health string) *simNode {
	t.Helper()
	root := t.TempDir()
	if err := os.Symlink(shared, filepath.Join(root, "shared")); err != nil {
		t.Fatal(err)
	}
	n := &simNode{t: t, id: id, root: root, rb: &recordingRebooter{}, clock: clock}
	n.policy = writeFile(t, filepath.Join(root, "policy.toml"), fmt.Sprintf(`
strategy = "window"
[node]
id = %q
group = "web"
[[window]]
name = "nightly"
start = "0 2 * * *"
duration = "3h"
[lock]
plugin = "file"
slots = 1
[lock.config]
dir = "/shared/locks"
[post_boot]
grace = "1m"
[budget]
max_reboots = 2
period = "24h"
%s`, id, health))
	n.app = &App{Root: root, Rebooter: n.rb, Stdout: os.Stdout, Stderr: os.Stderr, Now: clock.Now, Exe: os.Args[0]}
	n.app.Logger = newLogger(&strings.Builder{}, "error")
	n.setBoot()
	touch(t, filepath.Join(root, "run/reboot-required"))
	n.start()
	return n
}

func (n *simNode) setBoot() {
	writeFile(n.t, filepath.Join(n.root, "proc/sys/kernel/random/boot_id"), fmt.Sprintf("%s-boot-%d\n", n.id, n.boots))
}

// start builds the agent from the persisted state, as a (re)started
// process would.
func (n *simNode) start() {
	n.t.Helper()
	if n.rt != nil {
		n.rt.Close()
	}
	pol, err := n.app.LoadPolicy(n.policy)
	if err != nil {
		n.t.Fatal(err)
	}
	rt, err := n.app.buildAgent(context.Background(), pol, agentFlags{clock: n.clock})
	if err != nil {
		n.t.Fatal(err)
	}
	n.rt = rt
	n.t.Cleanup(rt.Close)
}

// reboot simulates the machine coming back with the update applied.
func (n *simNode) reboot() {
	n.boots++
	n.setBoot()
	os.Remove(filepath.Join(n.root, "run/reboot-required"))
	n.start()
}

func (n *simNode) step() scheduler.Result {
	n.t.Helper()
	r, err := n.rt.agent.Step(context.Background())
	if err != nil {
		n.t.Fatalf("%s: %v", n.id, err)
	}
	return r
}

func (n *simNode) expect(decision scheduler.Decision, reason string) scheduler.Result {
	n.t.Helper()
	r := n.step()
	if r.Decision != decision || !strings.Contains(r.Reason, reason) {
		n.t.Fatalf("%s: got %s %q, want %s containing %q", n.id, r.Decision, r.Reason, decision, reason)
	}
	return r
}

func (n *simNode) reboots() int {
	n.rb.mu.Lock()
	defer n.rb.mu.Unlock()
	return n.rb.calls
}

func execCheck(name, phase, timeout string, argv ...string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = fmt.Sprintf("%q", a)
	}
	return fmt.Sprintf("\n[[health]]\nname = %q\nplugin = \"exec\"\nphase = %q\ntimeout = %q\n[health.config]\nargv = [%s]\n", name, phase, timeout, strings.Join(q, ", "))
}

// agentFromFile builds the agent of policy file pol below root on clock,
// with a recording rebooter; it is closed when the test ends.
func agentFromFile(t *testing.T, root, pol string, clock *scheduler.FakeClock) (*runtime, *recordingRebooter) {
	t.Helper()
	rb := &recordingRebooter{}
	app := &App{Root: root, Rebooter: rb, Now: clock.Now, Exe: os.Args[0], Stdout: os.Stdout, Stderr: os.Stderr}
	app.Logger = newLogger(io.Discard, "error")
	p, err := app.LoadPolicy(pol)
	if err != nil {
		t.Fatal(err)
	}
	rt, err := app.buildAgent(t.Context(), p, agentFlags{clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rt.Close)
	return rt, rb
}

func fakeClock(t *testing.T, at string) *scheduler.FakeClock {
	t.Helper()
	t0, err := time.Parse(time.RFC3339, at)
	if err != nil {
		t.Fatal(err)
	}
	c := scheduler.NewFakeClock(t0)
	c.SetAutoAdvance(true)
	return c
}

func slotHolders(t *testing.T, shared string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(shared, "locks", "web.json"))
	if err != nil {
		return ""
	}
	return string(b)
}

// holds reports whether id is in the group's holder list on disk.
func holds(t *testing.T, shared, id string) bool {
	t.Helper()
	var s struct {
		Holders []string `json:"holders"`
	}
	if err := json.Unmarshal([]byte(slotHolders(t, shared)), &s); err != nil {
		return false
	}
	return slices.Contains(s.Holders, id)
}

func TestPreRebootCheckFailureBlocksAndReleases(t *testing.T) {
	shared := t.TempDir()
	flag := filepath.Join(t.TempDir(), "unhealthy")
	touch(t, flag)
	clock := fakeClock(t, "2025-06-03T02:10:00Z")
	n := newSimNode(t, "node-a", shared, clock, execCheck("api", "pre-reboot", "10s", "test", "!", "-e", flag))
	r := n.expect(scheduler.DecisionWaitHealth, "check 'api' failed: exit status 1")
	if n.reboots() != 0 || r.HoldingSlot || holds(t, shared, "node-a") {
		t.Fatalf("reboots %d, holding %v, locks %s", n.reboots(), r.HoldingSlot, slotHolders(t, shared))
	}
	if len(r.Checks) != 1 || r.Checks[0].Outcome != "fail" {
		t.Fatalf("checks %+v", r.Checks)
	}
	os.Remove(flag)
	clock.Advance(time.Hour)
	n.expect(scheduler.DecisionReboot, "rebooting")
}

func TestHangingCheckTimesOutAndBlocks(t *testing.T) {
	shared := t.TempDir()
	clock := fakeClock(t, "2025-06-03T02:10:00Z")
	n := newSimNode(t, "node-a", shared, clock, execCheck("slow", "pre-reboot", "1s", "sleep", "60"))
	r := n.expect(scheduler.DecisionWaitHealth, "check 'slow' failed: timed out")
	if n.reboots() != 0 || r.Checks[0].Outcome != "error" {
		t.Fatalf("reboots %d checks %+v", n.reboots(), r.Checks)
	}
}

func TestPostBootFailureFreezesGroupUntilThaw(t *testing.T) {
	shared := t.TempDir()
	broken := filepath.Join(t.TempDir(), "service-broken")
	clock := fakeClock(t, "2025-06-03T02:10:00Z")
	post := execCheck("service", "post-boot", "10s", "test", "!", "-e", broken)
	a := newSimNode(t, "node-a", shared, clock, post)
	b := newSimNode(t, "node-b", shared, clock, post)

	a.expect(scheduler.DecisionReboot, "rebooting")
	b.expect(scheduler.DecisionWaitSlot, "held by node-a")
	touch(t, broken) // the update breaks the service
	a.reboot()
	a.expect(scheduler.DecisionPostBoot, "grace")
	clock.Advance(2 * time.Minute)
	r := a.expect(scheduler.DecisionBlocked, "post-boot check 'service' failed")
	if !r.HoldingSlot || !strings.Contains(r.Reason, `group "web" frozen`) {
		t.Fatalf("%+v", r)
	}
	if !strings.Contains(slotHolders(t, shared), `"frozen"`) {
		t.Fatalf("group not frozen: %s", slotHolders(t, shared))
	}
	// The operator fixes the service; node-a's checks pass again and it
	// gives its slot back, but the group stays frozen until thawed.
	os.Remove(broken)
	clock.Advance(10 * time.Minute)
	a.expect(scheduler.DecisionIdle, "slot released (the group stays frozen until thawed)")
	b.expect(scheduler.DecisionBlocked, `group "web" is frozen by node-a`)
	if b.reboots() != 0 {
		t.Fatal("node-b rebooted into a frozen group")
	}
	out, errOut, code := run(t, &App{Root: b.root}, "locks", "thaw", "--group", "web", "--policy", b.policy)
	if code != 0 {
		t.Fatalf("thaw: %d %s %s", code, out, errOut)
	}
	b.expect(scheduler.DecisionReboot, "rebooting")
	if b.reboots() != 1 {
		t.Fatalf("node-b reboots %d", b.reboots())
	}
}

func TestRebootBudgetStopsLoopWithPlugins(t *testing.T) {
	shared := t.TempDir()
	clock := fakeClock(t, "2025-06-03T02:10:00Z")
	n := newSimNode(t, "node-a", shared, clock, execCheck("ok", "post-boot", "10s", "true"))
	for range 2 {
		n.expect(scheduler.DecisionReboot, "rebooting")
		n.reboot()
		touch(t, filepath.Join(n.root, "run/reboot-required")) // the update never sticks
		n.expect(scheduler.DecisionPostBoot, "grace")
		clock.Advance(2 * time.Minute)
		n.expect(scheduler.DecisionIdle, "post-boot checks passed; slot released")
	}
	n.expect(scheduler.DecisionBlocked, "reboot budget spent")
	if n.reboots() != 2 {
		t.Fatalf("%d reboots", n.reboots())
	}
}

// TestBestEffortRebootsWhenEtcdIsDown runs the real etcd locker plugin
// against a port nothing listens on: best-effort reboots without a slot,
// window (fail closed) does not.
func TestBestEffortRebootsWhenEtcdIsDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	for _, tt := range []struct {
		strategy string
		decision scheduler.Decision
		reboots  int
	}{
		{"best-effort", scheduler.DecisionReboot, 1},
		{"window", scheduler.DecisionWaitSlot, 0},
	} {
		t.Run(tt.strategy, func(t *testing.T) {
			root := t.TempDir()
			touch(t, filepath.Join(root, "run/reboot-required"))
			pol := writeFile(t, filepath.Join(root, "policy.toml"), fmt.Sprintf(`
strategy = %q
[node]
id = "node-a"
[lock]
plugin = "etcd"
timeout = "3s"
[lock.config]
endpoints = ["http://%s"]
dial_timeout = "1s"
request_timeout = "1s"
`, tt.strategy, dead))
			rt, rb := agentFromFile(t, root, pol, fakeClock(t, "2025-06-03T02:10:00Z"))
			r, err := rt.agent.Step(t.Context())
			if err != nil || r.Decision != tt.decision || rb.calls != tt.reboots {
				t.Fatalf("got %s (%s), %d reboots, err %v", r.Decision, r.Reason, rb.calls, err)
			}
		})
	}
}
