package scheduler_test

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/offpeak/offpeak/internal/policyload"
	"github.com/offpeak/offpeak/internal/statefile"
	filelocker "github.com/offpeak/offpeak/lockers/file"
	"github.com/offpeak/offpeak/plugins"
	"github.com/offpeak/offpeak/scheduler"
	"github.com/offpeak/offpeak/scheduler/policy"
)

// node is one simulated host: its boot id, staged flag and reboot count.
type node struct {
	mu       sync.Mutex
	id       string
	boot     int
	staged   bool
	reboots  int
	failNext error
}

func (n *node) BootID() (string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.id + "-boot-" + string(rune('a'+n.boot)), nil
}

func (n *node) Detect(context.Context) scheduler.Detection {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.staged {
		return scheduler.Detection{State: scheduler.StagedYes, Version: "2.0", Reason: "sentinel"}
	}
	return scheduler.Detection{State: scheduler.StagedNo, Reason: "none"}
}

func (n *node) Reboot(context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.failNext != nil {
		err := n.failNext
		n.failNext = nil
		return err
	}
	n.reboots++
	return nil
}

// bootUp simulates the machine coming back: a new boot id, update applied.
func (n *node) bootUp() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.boot++
	n.staged = false
}

func (n *node) rebootCount() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.reboots
}

const basePolicy = `
strategy = "window"
[node]
group = "web"
[[window]]
name = "nightly"
start = "0 2 * * *"
duration = "3h"
cutoff = "30m"
[lock]
plugin = "file"
slots = 1
[post_boot]
grace = "1m"
`

func mustPolicy(t *testing.T, src string) *policy.Policy {
	t.Helper()
	p, err := policyload.Parse("test.toml", []byte(src), policyload.Options{Now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func newFileLocker(t *testing.T, dir string) plugins.Locker {
	t.Helper()
	l := filelocker.New(nil)
	cfg, _ := json.Marshal(filelocker.Config{Dir: dir})
	if err := l.Configure(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	return l
}

type harness struct {
	t      *testing.T
	clock  *scheduler.FakeClock
	lockd  string
	checks map[string]scheduler.HealthCheck
}

func newHarness(t *testing.T, at string) *harness {
	t0, err := time.Parse(time.RFC3339, at)
	if err != nil {
		t.Fatal(err)
	}
	return &harness{t: t, clock: scheduler.NewFakeClock(t0), lockd: t.TempDir(), checks: map[string]scheduler.HealthCheck{}}
}

func (h *harness) agent(n *node, src string, mod func(*scheduler.Options)) *scheduler.Agent {
	h.t.Helper()
	opts := scheduler.Options{
		Policy:   mustPolicy(h.t, src),
		NodeID:   n.id,
		Hostname: n.id + ".example",
		BootID:   n.BootID,
		Clock:    h.clock,
		Locker:   newFileLocker(h.t, h.lockd),
		Detector: n,
		Rebooter: n,
		Store:    statefile.File{Path: filepath.Join(h.t.TempDir(), "state.json")},
		Checks: func(plugin string) (scheduler.HealthCheck, error) {
			c, ok := h.checks[plugin]
			if !ok {
				return nil, errors.New("no plugin " + plugin)
			}
			return c, nil
		},
	}
	if mod != nil {
		mod(&opts)
	}
	a, err := scheduler.New(opts)
	if err != nil {
		h.t.Fatal(err)
	}
	return a
}

func step(t *testing.T, a *scheduler.Agent) scheduler.Result {
	t.Helper()
	r, err := a.Step(context.Background())
	if err != nil {
		t.Fatalf("step: %v", err)
	}
	return r
}

func want(t *testing.T, r scheduler.Result, decision scheduler.Decision, reason string) {
	t.Helper()
	if r.Decision != decision || !strings.Contains(r.Reason, reason) {
		t.Fatalf("got %s: %q; want %s containing %q", r.Decision, r.Reason, decision, reason)
	}
}

func TestTwoAgentsOneSlot(t *testing.T) {
	h := newHarness(t, "2025-06-03T02:10:00Z")
	a, b := &node{id: "node-a", staged: true}, &node{id: "node-b", staged: true}
	agentA, agentB := h.agent(a, basePolicy, nil), h.agent(b, basePolicy, nil)

	want(t, step(t, agentA), scheduler.DecisionReboot, "rebooting")
	rb := step(t, agentB)
	want(t, rb, scheduler.DecisionWaitSlot, "waiting for slot (1/1 held by node-a (node-a.example) since 2025-06-03T02:10:00Z)")
	if a.rebootCount() != 1 || b.rebootCount() != 0 {
		t.Fatalf("reboots a=%d b=%d", a.rebootCount(), b.rebootCount())
	}

	// node-a comes back; its slot is kept through the grace period.
	a.bootUp()
	h.clock.Advance(2 * time.Minute)
	want(t, step(t, agentA), scheduler.DecisionPostBoot, "grace")
	want(t, step(t, agentB), scheduler.DecisionWaitSlot, "held by node-a")
	h.clock.Advance(time.Minute)
	ra := step(t, agentA)
	want(t, ra, scheduler.DecisionIdle, "post-boot checks passed; slot released")
	if ra.HoldingSlot {
		t.Fatal("slot still reported held")
	}
	want(t, step(t, agentB), scheduler.DecisionReboot, "rebooting")
	if b.rebootCount() != 1 || a.rebootCount() != 1 {
		t.Fatalf("reboots a=%d b=%d", a.rebootCount(), b.rebootCount())
	}
}

func TestWindowClosesWhileWaitingForSlot(t *testing.T) {
	h := newHarness(t, "2025-06-03T04:00:00Z")
	a, b := &node{id: "node-a", staged: true}, &node{id: "node-b", staged: true}
	agentA, agentB := h.agent(a, basePolicy, nil), h.agent(b, basePolicy, nil)
	want(t, step(t, agentA), scheduler.DecisionReboot, "")
	want(t, step(t, agentB), scheduler.DecisionWaitSlot, "")
	// The cutoff (04:30) passes while node-a still holds the slot.
	h.clock.Set(time.Date(2025, 6, 3, 4, 31, 0, 0, time.UTC))
	a.bootUp()
	step(t, agentA)
	h.clock.Advance(2 * time.Minute)
	want(t, step(t, agentA), scheduler.DecisionIdle, "slot released")
	r := step(t, agentB)
	want(t, r, scheduler.DecisionWaitWindow, "outside window, next opens at 2025-06-04T02:00:00Z")
	if b.rebootCount() != 0 {
		t.Fatal("node-b rebooted outside the window")
	}
	if r.NextWindow == nil || !r.NextWindow.Equal(time.Date(2025, 6, 4, 2, 0, 0, 0, time.UTC)) {
		t.Fatalf("next window %v", r.NextWindow)
	}
}

// closingLocker closes the window (by moving the clock) while the slot is
// being granted: the agent must give the slot back and not reboot.
type closingLocker struct {
	plugins.Locker
	clock *scheduler.FakeClock
	to    time.Time
}

func (c closingLocker) Acquire(ctx context.Context, req plugins.AcquireRequest) (plugins.AcquireResult, error) {
	r, err := c.Locker.Acquire(ctx, req)
	c.clock.Set(c.to)
	return r, err
}

func TestSlotGivenBackWhenWindowClosesAfterAcquire(t *testing.T) {
	h := newHarness(t, "2025-06-03T04:29:00Z")
	a := &node{id: "node-a", staged: true}
	fl := newFileLocker(t, h.lockd)
	agentA := h.agent(a, basePolicy, func(o *scheduler.Options) {
		o.Locker = closingLocker{Locker: fl, clock: h.clock, to: time.Date(2025, 6, 3, 4, 30, 0, 0, time.UTC)}
	})
	r := step(t, agentA)
	want(t, r, scheduler.DecisionWaitWindow, "window closed after taking the slot; slot given back")
	st, err := fl.Status(context.Background(), "web")
	if err != nil || len(st.Holders) != 0 {
		t.Fatalf("slot still held: %+v %v", st, err)
	}
	if a.rebootCount() != 0 {
		t.Fatal("rebooted")
	}
}

func TestKilledHolderKeepsSlot(t *testing.T) {
	h := newHarness(t, "2025-06-03T02:10:00Z")
	a, b := &node{id: "node-a", staged: true}, &node{id: "node-b", staged: true}
	agentA := h.agent(a, basePolicy, nil)
	want(t, step(t, agentA), scheduler.DecisionReboot, "")
	// node-a's process dies here; nothing releases its slot.
	agentB := h.agent(b, basePolicy, nil)
	h.clock.Advance(30 * time.Minute)
	r := step(t, agentB)
	want(t, r, scheduler.DecisionWaitSlot, "held by node-a")
	if r.Lock == nil || len(r.Lock.Holders) != 1 || r.Lock.Holders[0].BootID != "node-a-boot-a" {
		t.Fatalf("lock info %+v", r.Lock)
	}
}

func TestStaleHolderReclaimedOnlyByPolicy(t *testing.T) {
	h := newHarness(t, "2025-06-03T02:10:00Z")
	stale := basePolicy + "\n" // stale_after goes into [lock]
	stale = strings.Replace(stale, "slots = 1", "slots = 1\nstale_after = \"1h\"", 1)
	a, b := &node{id: "node-a", staged: true}, &node{id: "node-b", staged: true}
	want(t, step(t, h.agent(a, stale, nil)), scheduler.DecisionReboot, "")
	agentB := h.agent(b, basePolicy, nil)
	h.clock.Advance(2 * time.Hour)
	want(t, step(t, agentB), scheduler.DecisionWaitSlot, "held by node-a") // no stale_after: never reclaimed
	agentB2 := h.agent(b, stale, nil)
	want(t, step(t, agentB2), scheduler.DecisionReboot, "")
}

func TestStrategies(t *testing.T) {
	tests := []struct {
		name     string
		policy   string
		at       string
		locker   func(h *harness) plugins.Locker
		decision scheduler.Decision
		reboots  int
	}{
		{"off never reboots", strings.Replace(basePolicy, `strategy = "window"`, `strategy = "off"`, 1), "2025-06-03T02:10:00Z", nil, scheduler.DecisionBlocked, 0},
		{"reboot reboots at once, outside any window", strings.Replace(basePolicy, `strategy = "window"`, `strategy = "reboot"`, 1), "2025-06-03T12:00:00Z", nil, scheduler.DecisionReboot, 1},
		{"etcd-lock reboots outside windows with a slot", strings.Replace(basePolicy, `strategy = "window"`, `strategy = "etcd-lock"`, 1), "2025-06-03T12:00:00Z", nil, scheduler.DecisionReboot, 1},
		{"etcd-lock without a reachable locker waits", strings.Replace(basePolicy, `strategy = "window"`, `strategy = "etcd-lock"`, 1), "2025-06-03T12:00:00Z", func(*harness) plugins.Locker { return downLocker{} }, scheduler.DecisionWaitSlot, 0},
		{"best-effort without a reachable locker reboots", strings.Replace(basePolicy, `strategy = "window"`, `strategy = "best-effort"`, 1), "2025-06-03T12:00:00Z", func(*harness) plugins.Locker { return downLocker{} }, scheduler.DecisionReboot, 1},
		{"window outside the window waits", basePolicy, "2025-06-03T12:00:00Z", nil, scheduler.DecisionWaitWindow, 0},
		{"window with an unreachable locker never reboots", basePolicy, "2025-06-03T02:10:00Z", func(*harness) plugins.Locker { return downLocker{} }, scheduler.DecisionWaitSlot, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, tt.at)
			n := &node{id: "node-a", staged: true}
			ag := h.agent(n, tt.policy, func(o *scheduler.Options) {
				if tt.locker != nil {
					o.Locker = tt.locker(h)
				}
			})
			r := step(t, ag)
			if r.Decision != tt.decision || n.rebootCount() != tt.reboots {
				t.Fatalf("got %s (%s), %d reboots; want %s, %d", r.Decision, r.Reason, n.rebootCount(), tt.decision, tt.reboots)
			}
		})
	}
}

type downLocker struct{ plugins.Locker }

func (downLocker) Acquire(context.Context, plugins.AcquireRequest) (plugins.AcquireResult, error) {
	return plugins.AcquireResult{}, plugins.ErrUnavailable
}
func (downLocker) Release(context.Context, plugins.ReleaseRequest) error {
	return plugins.ErrUnavailable
}
func (downLocker) Status(context.Context, string) (plugins.LockState, error) {
	return plugins.LockState{}, plugins.ErrUnavailable
}

func TestNothingStagedMakesNoLockRequests(t *testing.T) {
	h := newHarness(t, "2025-06-03T00:00:00Z")
	n := &node{id: "node-a"}
	counter := &countingLocker{Locker: newFileLocker(t, h.lockd)}
	ag := h.agent(n, basePolicy, func(o *scheduler.Options) { o.Locker = counter })
	for range 24 * 12 {
		want(t, step(t, ag), scheduler.DecisionIdle, "no update staged")
		h.clock.Advance(5 * time.Minute)
	}
	if counter.calls != 0 {
		t.Fatalf("%d lock requests with nothing staged", counter.calls)
	}
}

type countingLocker struct {
	plugins.Locker
	calls int
}

func (c *countingLocker) Acquire(ctx context.Context, r plugins.AcquireRequest) (plugins.AcquireResult, error) {
	c.calls++
	return c.Locker.Acquire(ctx, r)
}
func (c *countingLocker) Release(ctx context.Context, r plugins.ReleaseRequest) error {
	c.calls++
	return c.Locker.Release(ctx, r)
}
func (c *countingLocker) Status(ctx context.Context, g string) (plugins.LockState, error) {
	c.calls++
	return c.Locker.Status(ctx, g)
}

func TestRebootErrorSurfacedAndSlotGivenBack(t *testing.T) {
	h := newHarness(t, "2025-06-03T02:10:00Z")
	n := &node{id: "node-a", staged: true, failNext: errors.New("org.freedesktop.login1.OperationInProgress: There's already a shutdown or sleep operation in progress")}
	ag := h.agent(n, basePolicy, nil)
	r := step(t, ag)
	want(t, r, scheduler.DecisionBlocked, "reboot failed: org.freedesktop.login1.OperationInProgress")
	st := ag.State()
	if !strings.Contains(st.RebootError, "OperationInProgress") || st.Phase != scheduler.PhaseIdle || len(st.Reboots) != 0 {
		t.Fatalf("state %+v", st)
	}
	// Next pass tries again.
	want(t, step(t, ag), scheduler.DecisionReboot, "rebooting")
}

// TestCrashAtEveryPhaseResumes rebuilds the agent from its state file after
// each pass, as a crash and restart would.
func TestCrashAtEveryPhaseResumes(t *testing.T) {
	h := newHarness(t, "2025-06-03T02:10:00Z")
	n := &node{id: "node-a", staged: true}
	statePath := filepath.Join(t.TempDir(), "state.json")
	restart := func() *scheduler.Agent {
		return h.agent(n, basePolicy, func(o *scheduler.Options) { o.Store = statefile.File{Path: statePath} })
	}
	want(t, step(t, restart()), scheduler.DecisionReboot, "rebooting")
	// Crash right after asking for the reboot, before it happened: the new
	// process must not ask again at once.
	want(t, step(t, restart()), scheduler.DecisionReboot, "waiting for it")
	if n.rebootCount() != 1 {
		t.Fatalf("asked for %d reboots", n.rebootCount())
	}
	// The reboot never came: after the timeout it evaluates again, still
	// holding its slot, and asks once more.
	h.clock.Advance(16 * time.Minute)
	want(t, step(t, restart()), scheduler.DecisionReboot, "rebooting")
	if n.rebootCount() != 2 {
		t.Fatalf("asked for %d reboots", n.rebootCount())
	}
	n.bootUp()
	want(t, step(t, restart()), scheduler.DecisionPostBoot, "grace")
	h.clock.Advance(2 * time.Minute)
	want(t, step(t, restart()), scheduler.DecisionIdle, "slot released")
	st, _ := newFileLocker(t, h.lockd).Status(context.Background(), "web")
	if len(st.Holders) != 0 {
		t.Fatalf("slot still held: %+v", st)
	}
}

func TestCorruptStateRefusesToStart(t *testing.T) {
	p := filepath.Join(t.TempDir(), "state.json")
	if err := statefile.WriteAtomic(p, []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := scheduler.New(scheduler.Options{Policy: mustPolicy(t, basePolicy), NodeID: "n", Locker: newFileLocker(t, t.TempDir()), Store: statefile.File{Path: p}})
	if !errors.Is(err, statefile.ErrCorrupt) {
		t.Fatalf("got %v", err)
	}
}

func TestReloadKeepsOldPolicyWhenInvalid(t *testing.T) {
	h := newHarness(t, "2025-06-03T02:10:00Z")
	ag := h.agent(&node{id: "node-a"}, basePolicy, nil)
	bad := mustPolicy(t, basePolicy)
	bad.Strategy = "sometimes"
	if err := ag.Reload(scheduler.Components{Policy: bad, NodeID: "node-a", Locker: newFileLocker(t, h.lockd)}); err == nil {
		t.Fatal("invalid policy accepted")
	}
	if r := step(t, ag); r.Strategy != "window" {
		t.Fatalf("strategy %q after a refused reload", r.Strategy)
	}
}

func TestRebootBudgetStopsALoop(t *testing.T) {
	h := newHarness(t, "2025-06-03T02:00:00Z")
	n := &node{id: "node-a", staged: true}
	pol := strings.Replace(basePolicy, `strategy = "window"`, `strategy = "reboot"`, 1) + "[budget]\nmax_reboots = 2\nperiod = \"24h\"\n"
	ag := h.agent(n, pol, nil)
	for i := range 2 {
		want(t, step(t, ag), scheduler.DecisionReboot, "rebooting")
		n.bootUp()
		n.mu.Lock()
		n.staged = true // the update "comes back": a loop
		n.mu.Unlock()
		want(t, step(t, ag), scheduler.DecisionPostBoot, "grace")
		h.clock.Advance(2 * time.Minute)
		want(t, step(t, ag), scheduler.DecisionIdle, "post-boot checks passed")
		_ = i
	}
	want(t, step(t, ag), scheduler.DecisionBlocked, "reboot budget spent: 2 reboots in the last 24h")
	if n.rebootCount() != 2 {
		t.Fatalf("%d reboots", n.rebootCount())
	}
	h.clock.Advance(24 * time.Hour)
	want(t, step(t, ag), scheduler.DecisionReboot, "rebooting")
}

// signalRebooter reports each reboot on a channel.
type signalRebooter struct {
	*node
	ch chan struct{}
}

func (s signalRebooter) Reboot(ctx context.Context) error {
	err := s.node.Reboot(ctx)
	s.ch <- struct{}{}
	return err
}

// TestRunWakesOnRelease: a running agent waiting for a slot takes it as soon
// as the holder releases, without waiting for its next period.
func TestRunWakesOnRelease(t *testing.T) {
	h := newHarness(t, "2025-06-03T02:10:00Z")
	a, b := &node{id: "node-a", staged: true}, &node{id: "node-b", staged: true}
	agentA := h.agent(a, basePolicy, nil)
	want(t, step(t, agentA), scheduler.DecisionReboot, "")

	rebooted := make(chan struct{}, 1)
	agentB := h.agent(b, basePolicy, func(o *scheduler.Options) {
		fl := filelocker.New(nil)
		cfg, _ := json.Marshal(filelocker.Config{Dir: h.lockd, PollInterval: plugins.Duration(5 * time.Millisecond)})
		if err := fl.Configure(context.Background(), cfg); err != nil {
			t.Fatal(err)
		}
		o.Locker = fl
		o.Rebooter = signalRebooter{b, rebooted}
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- agentB.Run(ctx) }()
	// agent B is asleep on its period timer and its watch.
	if err := h.clock.WaitForTimers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	select {
	case <-rebooted:
		t.Fatal("node-b rebooted while node-a held the slot")
	default:
	}
	a.bootUp()
	step(t, agentA) // grace starts
	h.clock.Advance(2 * time.Minute)
	want(t, step(t, agentA), scheduler.DecisionIdle, "slot released")
	select {
	case <-rebooted:
	case <-time.After(30 * time.Second):
		t.Fatal("node-b did not take the freed slot")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

type chanObserver chan scheduler.Result

// broadcastingNode also warns users, recording whether it did before any
// observer heard of the reboot.
type broadcastingNode struct {
	*node
	err       error
	broadcast chan string
}

func (b broadcastingNode) Broadcast(_ context.Context, msg string) error {
	b.broadcast <- msg
	return b.err
}

func (c chanObserver) Observe(r scheduler.Result) { c <- r }

// During the warning delay before a reboot (minutes, with `[reboot] warn`)
// status, sd_notify, metrics and coordinator.conf already say a reboot is
// coming, holding the slot, before the reboot is asked for.
func TestRebootAnnouncedBeforeWarnDelay(t *testing.T) {
	h := newHarness(t, "2025-06-03T02:10:00Z")
	n := &node{id: "node-a", staged: true}
	obs := make(chanObserver, 4)
	statePath := filepath.Join(t.TempDir(), "state.json")
	bn := broadcastingNode{node: n, broadcast: make(chan string, 1)}
	ag := h.agent(n, basePolicy+"[reboot]\nwarn = \"5m\"\n", func(o *scheduler.Options) {
		o.Observer = obs
		o.Store = statefile.File{Path: statePath}
		o.Rebooter = bn
	})
	done := make(chan scheduler.Result, 1)
	go func() {
		r, err := ag.Step(context.Background())
		if err != nil {
			t.Errorf("step: %v", err)
		}
		done <- r
	}()

	interim := <-obs
	select {
	case msg := <-bn.broadcast:
		if !strings.Contains(msg, "in 5m") {
			t.Errorf("broadcast %q", msg)
		}
	default:
		t.Fatal("announced users were warned before warning them")
	}
	want(t, interim, scheduler.DecisionReboot,
		"rebooting (2.0) at 2025-06-03T02:15:00Z after a 5m warning, logged-in users warned: window nightly open until 2025-06-03T04:30:00Z, slot held")
	if !interim.HoldingSlot {
		t.Error("interim result does not show the slot held")
	}
	var st scheduler.State
	if err := (statefile.File{Path: statePath}).Load(&st); err != nil {
		t.Fatal(err)
	}
	if st.Last == nil || st.Last.Reason != interim.Reason {
		t.Fatalf("state.json last = %+v, want the interim decision", st.Last)
	}
	if n.rebootCount() != 0 {
		t.Fatal("rebooted before the warning delay")
	}

	if err := h.clock.WaitForTimers(t.Context(), 1); err != nil {
		t.Fatal(err)
	}
	h.clock.Advance(5 * time.Minute)
	final := <-done
	want(t, final, scheduler.DecisionReboot, "rebooting (2.0)")
	if got := <-obs; got.Reason != final.Reason {
		t.Fatalf("observers last saw %q, want the final %q", got.Reason, final.Reason)
	}
	if n.rebootCount() != 1 {
		t.Fatalf("reboots = %d, want 1", n.rebootCount())
	}
}

// Stopped during the warning delay, the agent does not reboot and its last
// decision no longer says a reboot is coming.
func TestStopDuringWarnDelayCancelsAnnouncedReboot(t *testing.T) {
	h := newHarness(t, "2025-06-03T02:10:00Z")
	n := &node{id: "node-a", staged: true}
	obs := make(chanObserver, 4)
	statePath := filepath.Join(t.TempDir(), "state.json")
	// A failed warning is not reported as given.
	bn := broadcastingNode{node: n, err: errors.New("wall: not found"), broadcast: make(chan string, 1)}
	ag := h.agent(n, basePolicy+"[reboot]\nwarn = \"5m\"\n", func(o *scheduler.Options) {
		o.Observer = obs
		o.Store = statefile.File{Path: statePath}
		o.Rebooter = bn
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type stepResult struct {
		r   scheduler.Result
		err error
	}
	done := make(chan stepResult, 1)
	go func() {
		r, err := ag.Step(ctx)
		done <- stepResult{r, err}
	}()
	want(t, <-obs, scheduler.DecisionReboot, "after a 5m warning, warning logged-in users failed")
	cancel()
	res := <-done
	if !errors.Is(res.err, context.Canceled) {
		t.Fatalf("step error = %v, want context.Canceled", res.err)
	}
	want(t, res.r, scheduler.DecisionBlocked, "stopped during the warning delay")
	var st scheduler.State
	if err := (statefile.File{Path: statePath}).Load(&st); err != nil {
		t.Fatal(err)
	}
	if st.Last == nil || st.Last.Decision != scheduler.DecisionBlocked {
		t.Fatalf("state.json last = %+v, want blocked", st.Last)
	}
	if n.rebootCount() != 0 {
		t.Fatal("rebooted")
	}
}
