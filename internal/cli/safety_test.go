package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	etcdlocker "github.com/offpeak/offpeak/lockers/etcd"
	"github.com/offpeak/offpeak/lockers/etcd/etcdtest"
	"github.com/offpeak/offpeak/plugins"
	"github.com/offpeak/offpeak/scheduler"
)

// `check --now T` is a what-if: without --dry-run it would reboot the
// machine now, and record that reboot at T. It is refused, and nothing runs.
func TestCheckNowNeedsDryRun(t *testing.T) {
	root := t.TempDir()
	touch(t, filepath.Join(root, "run/reboot-required"))
	writeFile(t, filepath.Join(root, "etc/machine-id"), "node-a\n")
	rb := &recordingRebooter{}
	out, errOut, code := run(t, &App{Root: root, Rebooter: rb}, "check", "--now", "2025-06-03T02:30:00Z")
	if rb.calls != 0 {
		t.Fatalf("rebooted %d time(s) on a what-if; stdout %s", rb.calls, out)
	}
	if code == 0 || !strings.Contains(errOut, "--now needs --dry-run") {
		t.Fatalf("exit %d, stderr %q; want an error saying --now needs --dry-run", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(root, "var/lib/offpeak/state.json")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the refused what-if wrote state: %v", err)
	}
}

// webhookEvents is a real webhook receiver; it records the events it got.
type webhookEvents struct {
	mu     sync.Mutex
	events []string
}

func (w *webhookEvents) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	var ev struct {
		Event string `json:"event"`
	}
	if err := json.NewDecoder(r.Body).Decode(&ev); err != nil {
		http.Error(rw, err.Error(), http.StatusBadRequest)
		return
	}
	w.mu.Lock()
	w.events = append(w.events, ev.Event)
	w.mu.Unlock()
}

func (w *webhookEvents) got() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.events...)
}

// Under --root, a webhook without ca_file works: the empty path stays
// empty instead of becoming the root directory ("read <root>: is a
// directory"), which disabled the webhook.
func TestWebhookWithoutCAFileUnderRoot(t *testing.T) {
	recv := &webhookEvents{}
	srv := httptest.NewServer(recv)
	t.Cleanup(srv.Close)
	root := t.TempDir()
	touch(t, filepath.Join(root, "run/reboot-required"))
	pol := writeFile(t, filepath.Join(root, "policy.toml"), fmt.Sprintf(`
strategy = "reboot"
[node]
id = "node-a"
[notify]
webhook = %q
`, srv.URL))
	rt, rb := agentFromFile(t, root, pol, fakeClock(t, "2025-06-03T02:10:00Z"))
	r, err := rt.agent.Step(t.Context())
	if err != nil || r.Decision != scheduler.DecisionReboot || rb.calls != 1 {
		t.Fatalf("got %s (%s), %d reboots, err %v", r.Decision, r.Reason, rb.calls, err)
	}
	if got := recv.got(); len(got) != 1 || got[0] != "reboot-planned" {
		t.Fatalf("webhook received %q, want [reboot-planned]", got)
	}
}

// Under --root the machine id comes from <root>/etc/machine-id only, never
// from the host's /etc/machine-id: a trial tree would otherwise act as the
// host itself. node.id in the policy still wins, and without either the
// host name is the id.
func TestMachineIDOnlyBelowRoot(t *testing.T) {
	tests := []struct {
		name, machineID, nodeID, want string
	}{
		{"machine-id below the root", "root-machine\n", "", "root-machine"},
		{"node.id wins", "root-machine\n", "policy-id", "policy-id"},
		{"no machine-id below the root: the host name", "", "", "host-h"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			if tt.machineID != "" {
				writeFile(t, filepath.Join(root, "etc/machine-id"), tt.machineID)
			}
			node := "hostname = \"host-h\"\n"
			if tt.nodeID != "" {
				node += fmt.Sprintf("id = %q\n", tt.nodeID)
			}
			pol := writeFile(t, filepath.Join(root, "policy.toml"), "strategy = \"off\"\n[node]\n"+node)
			out, errOut, code := run(t, &App{Root: root}, "check", "--dry-run", "--policy", pol, "--output", "json")
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			var r scheduler.Result
			if err := json.Unmarshal([]byte(out), &r); err != nil {
				t.Fatal(err)
			}
			if r.Node != tt.want {
				t.Fatalf("node id %q, want %q", r.Node, tt.want)
			}
		})
	}
}

// blockingWebhook is a real receiver that hangs: each request waits until
// the test releases it (or the sender gives up).
type blockingWebhook struct {
	arrived chan string
	release chan struct{}
}

func (b *blockingWebhook) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	var ev struct {
		Event string `json:"event"`
	}
	json.NewDecoder(r.Body).Decode(&ev)
	b.arrived <- ev.Event
	select {
	case <-b.release:
	case <-r.Context().Done():
	}
}

// Nothing that can wait stands between the last window check and the
// reboot call: a webhook that hangs until the window has closed must not
// lead to a reboot outside the window; the slot is given back instead.
func TestHangingWebhookCannotPushRebootOutOfWindow(t *testing.T) {
	hook := &blockingWebhook{arrived: make(chan string, 4), release: make(chan struct{})}
	srv := httptest.NewServer(hook)
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(hook.release) })
	root := t.TempDir()
	touch(t, filepath.Join(root, "run/reboot-required"))
	pol := writeFile(t, filepath.Join(root, "policy.toml"), fmt.Sprintf(`
strategy = "window"
[node]
id = "node-a"
[[window]]
name = "nightly"
start = "0 2 * * *"
duration = "3h"
cutoff = "30m"
[notify]
webhook = %q
timeout = "1m"
`, srv.URL))
	clock := fakeClock(t, "2025-06-03T04:25:00Z") // reboots may begin until 04:30
	rt, rb := agentFromFile(t, root, pol, clock)
	type stepResult struct {
		r   scheduler.Result
		err error
	}
	done := make(chan stepResult, 1)
	go func() {
		r, err := rt.agent.Step(t.Context())
		done <- stepResult{r, err}
	}()
	select {
	case ev := <-hook.arrived:
		if ev != "reboot-planned" {
			t.Fatalf("first event %q", ev)
		}
	case res := <-done:
		t.Fatalf("the pass ended without notifying: %s (%s), %d reboots, err %v", res.r.Decision, res.r.Reason, rb.calls, res.err)
	}
	// While the webhook hangs, the window's last start passes.
	clock.Set(time.Date(2025, 6, 3, 4, 40, 0, 0, time.UTC))
	hook.release <- struct{}{}
	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}
	rb.mu.Lock()
	calls := rb.calls
	rb.mu.Unlock()
	if calls != 0 {
		t.Fatalf("rebooted at %s, after the window's last start 04:30: %s (%s)", clock.Now().Format(time.RFC3339), res.r.Decision, res.r.Reason)
	}
	if res.r.Decision != scheduler.DecisionWaitWindow || !strings.Contains(res.r.Reason, "slot given back") || res.r.HoldingSlot {
		t.Fatalf("got %s (%s), holding %v", res.r.Decision, res.r.Reason, res.r.HoldingSlot)
	}
	if st := rt.agent.State(); st.Phase != scheduler.PhaseIdle {
		t.Fatalf("phase %s after giving the slot back", st.Phase)
	}
}

// scrape returns the metrics served at addr.
func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A waiting node that cannot reach its lock service says so at WARN, not
// INFO, and offpeak_locker_up shows it until the service answers again.
func TestUnreachableLockServiceWarns(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	srv.Stop()
	root := t.TempDir()
	touch(t, filepath.Join(root, "run/reboot-required"))
	pol := writeFile(t, filepath.Join(root, "policy.toml"), fmt.Sprintf(`
strategy = "window"
[node]
id = "node-a"
[lock]
plugin = "etcd"
timeout = "3s"
[lock.config]
endpoints = [%q]
dial_timeout = "1s"
request_timeout = "1s"
`, srv.Endpoints[0]))
	clock := fakeClock(t, "2025-06-03T02:10:00Z")
	logs := &syncBuffer{}
	rb := &recordingRebooter{}
	app := &App{Root: root, Rebooter: rb, Now: clock.Now, Exe: os.Args[0], Stdout: io.Discard, Stderr: io.Discard, Logger: newLogger(logs, "info")}
	p, err := app.LoadPolicy(pol)
	if err != nil {
		t.Fatal(err)
	}
	ops, err := app.startOps(t.Context(), p, opsFlags{metricsListen: "127.0.0.1:0", coordinatorConf: coordinatorOff})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ops.Stop)
	rt, err := app.buildAgent(t.Context(), p, agentFlags{clock: clock, observer: ops.Observer(), ops: ops})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rt.Close)

	r, err := rt.agent.Step(t.Context())
	if err != nil || r.Decision != scheduler.DecisionWaitSlot || !strings.Contains(r.Reason, "locker unavailable") {
		t.Fatalf("got %s (%s), err %v", r.Decision, r.Reason, err)
	}
	var decision string
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "msg=decision") {
			decision = l
		}
	}
	if !strings.Contains(decision, "level=WARN") || !strings.Contains(decision, "locker unavailable") {
		t.Fatalf("the decision of a node that cannot reach its lock service was logged as %q, want WARN", decision)
	}
	if m := scrape(t, ops.MetricsAddr()); !strings.Contains(m, "offpeak_locker_up 0") {
		t.Fatalf("metrics lack offpeak_locker_up 0:\n%s", m)
	}

	srv.Restart()
	// The client reconnects with its own backoff: the first passes after
	// the restart may still find it unreachable.
	for i := 0; i < 60; i++ {
		if r, err = rt.agent.Step(t.Context()); err != nil || !strings.Contains(r.Reason, "locker unavailable") {
			break
		}
	}
	if err != nil || r.Decision != scheduler.DecisionReboot || rb.calls != 1 {
		t.Fatalf("once etcd is back: %s (%s), %d reboots, err %v", r.Decision, r.Reason, rb.calls, err)
	}
	if m := scrape(t, ops.MetricsAddr()); !strings.Contains(m, "offpeak_locker_up 1") {
		t.Fatalf("metrics lack offpeak_locker_up 1 once etcd answers")
	}
}

// reloadNode is one host whose agent is built from a policy file below its
// root, the way `offpeak agent` builds it, with a recording rebooter.
type reloadNode struct {
	t      *testing.T
	root   string
	policy string
	app    *App
	rb     *recordingRebooter
	flags  agentFlags
	rt     *runtime
	boots  int
}

func newReloadNode(t *testing.T, clock *scheduler.FakeClock, policy string) *reloadNode {
	t.Helper()
	root := t.TempDir()
	n := &reloadNode{t: t, root: root, rb: &recordingRebooter{}, flags: agentFlags{clock: clock}}
	n.policy = writeFile(t, filepath.Join(root, "policy.toml"), policy)
	n.flags.policyPath = n.policy
	n.app = &App{Root: root, Rebooter: n.rb, Now: clock.Now, Exe: os.Args[0], Stdout: io.Discard, Stderr: io.Discard}
	n.app.Logger = newLogger(io.Discard, "error")
	n.setBoot()
	touch(t, filepath.Join(root, "run/reboot-required"))
	n.start()
	return n
}

func (n *reloadNode) setBoot() {
	writeFile(n.t, filepath.Join(n.root, "proc/sys/kernel/random/boot_id"), fmt.Sprintf("boot-%d\n", n.boots))
}

// start builds the agent as a (re)started process would.
func (n *reloadNode) start() {
	n.t.Helper()
	if n.rt != nil {
		n.rt.Close()
	}
	pol, err := n.app.LoadPolicy(n.policy)
	if err != nil {
		n.t.Fatal(err)
	}
	rt, err := n.app.buildAgent(n.t.Context(), pol, n.flags)
	if err != nil {
		n.t.Fatal(err)
	}
	n.rt = rt
	n.t.Cleanup(rt.Close)
}

// rebooted simulates the machine coming back with the update applied.
func (n *reloadNode) rebooted() {
	n.boots++
	n.setBoot()
	os.Remove(filepath.Join(n.root, "run/reboot-required"))
}

func (n *reloadNode) reload(policy string) error {
	writeFile(n.t, n.policy, policy)
	return n.app.reloadAgent(n.t.Context(), n.rt, n.flags)
}

func (n *reloadNode) expect(decision scheduler.Decision, reason string) scheduler.Result {
	n.t.Helper()
	r, err := n.rt.agent.Step(n.t.Context())
	if err != nil || r.Decision != decision || !strings.Contains(r.Reason, reason) {
		n.t.Fatalf("got %s (%s), err %v; want %s containing %q", r.Decision, r.Reason, err, decision, reason)
	}
	return r
}

func (n *reloadNode) reboots() int {
	n.rb.mu.Lock()
	defer n.rb.mu.Unlock()
	return n.rb.calls
}

const reloadWindow = `
strategy = "window"
[node]
id = "node-a"
group = "web"
[[window]]
name = "nightly"
start = "0 2 * * *"
duration = "3h"
cutoff = "30m"
[post_boot]
grace = "1m"
`

func fileLockPolicy() string {
	return reloadWindow + "[lock]\nplugin = \"file\"\nslots = 3\n[lock.config]\ndir = \"/locks\"\n"
}

func etcdLockPolicy(endpoint string) string {
	return reloadWindow + fmt.Sprintf("[lock]\nplugin = \"etcd\"\nslots = 3\ntimeout = \"10s\"\n[lock.config]\nendpoints = [%q]\n", endpoint)
}

// fullEtcd starts etcd with the 3 slots of group web taken by other nodes.
func fullEtcd(t *testing.T) *etcdtest.Server {
	t.Helper()
	srv := etcdtest.Start(t, etcdtest.Options{})
	l := etcdlocker.New(nil)
	cfg, _ := json.Marshal(map[string]any{"endpoints": srv.Endpoints})
	if err := l.Configure(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	defer l.(io.Closer).Close()
	now := time.Date(2025, 6, 3, 1, 0, 0, 0, time.UTC)
	for i := range 3 {
		res, err := l.Acquire(t.Context(), plugins.AcquireRequest{Group: "web", Slots: 3, Now: now,
			Holder: plugins.Holder{ID: fmt.Sprintf("other-%d", i), Hostname: fmt.Sprintf("other-%d", i), AcquiredAt: now}})
		if err != nil || !res.Granted {
			t.Fatalf("filling slot %d: %+v %v", i, res, err)
		}
	}
	return srv
}

// A reload rebuilds what the policy configures: after `[lock] plugin` moves
// from file to etcd (3 slots, all taken), the agent asks etcd and waits; it
// does not take a 4th slot in the old local file.
func TestReloadSwitchesTheLocker(t *testing.T) {
	srv := fullEtcd(t)
	clock := fakeClock(t, "2025-06-03T12:00:00Z")
	n := newReloadNode(t, clock, fileLockPolicy())
	n.expect(scheduler.DecisionWaitWindow, "outside window")
	if err := n.reload(etcdLockPolicy(srv.Endpoints[0])); err != nil {
		t.Fatalf("reload refused with no slot held: %v", err)
	}
	clock.Set(time.Date(2025, 6, 4, 2, 10, 0, 0, time.UTC))
	n.expect(scheduler.DecisionWaitSlot, "waiting for slot (3/3 held by other-0")
	if n.reboots() != 0 || holds(t, n.root, "node-a") {
		t.Fatalf("%d reboots; file locker %s", n.reboots(), slotHolders(t, n.root))
	}
}

// While a slot is held, a reload that would look for it elsewhere is
// refused (and `status` says so); the slot is given back where it lives,
// and then the same reload goes through.
func TestReloadRefusedWhileHoldingASlot(t *testing.T) {
	srv := fullEtcd(t)
	clock := fakeClock(t, "2025-06-03T02:10:00Z")
	n := newReloadNode(t, clock, fileLockPolicy())
	n.expect(scheduler.DecisionReboot, "rebooting")
	if !holds(t, n.root, "node-a") {
		t.Fatal("no file slot")
	}
	err := n.reload(etcdLockPolicy(srv.Endpoints[0]))
	if err == nil || !strings.Contains(err.Error(), "slot") || !strings.Contains(err.Error(), `"file"`) {
		t.Fatalf("reload while holding a file slot: %v", err)
	}
	out, _, code := run(t, &App{Root: n.root}, "status")
	if code != 0 || !strings.Contains(out, "policy reload refused") {
		t.Fatalf("status does not show the refused reload:\n%s", out)
	}

	n.rebooted()
	n.expect(scheduler.DecisionPostBoot, "grace")
	clock.Advance(2 * time.Minute)
	n.expect(scheduler.DecisionIdle, "slot released")
	if holds(t, n.root, "node-a") {
		t.Fatalf("the file slot was not given back: %s", slotHolders(t, n.root))
	}

	if pluginProcs(t, n.root, "locker", "file") != 1 {
		t.Fatal("no file locker process before the reload")
	}
	if err := n.reload(etcdLockPolicy(srv.Endpoints[0])); err != nil {
		t.Fatalf("reload refused once the slot was given back: %v", err)
	}
	if k := pluginProcs(t, n.root, "locker", "file"); k != 0 {
		t.Fatalf("%d file locker process(es) left after the reload to etcd", k)
	}
	if out, _, _ := run(t, &App{Root: n.root}, "status"); strings.Contains(out, "policy reload refused") {
		t.Fatalf("status still shows the refused reload:\n%s", out)
	}
	touch(t, filepath.Join(n.root, "run/reboot-required"))
	n.expect(scheduler.DecisionWaitSlot, "3/3 held")
	if n.reboots() != 1 {
		t.Fatalf("%d reboots", n.reboots())
	}
}

// The slot is held across the reboot, and the agent that starts after it
// reads the policy from disk: if that now names another locker, the agent
// keeps the slot it holds and says so, until the settings it was taken
// under are back.
func TestRestartWithAnotherLockerKeepsTheSlot(t *testing.T) {
	srv := fullEtcd(t)
	clock := fakeClock(t, "2025-06-03T02:10:00Z")
	n := newReloadNode(t, clock, fileLockPolicy())
	n.expect(scheduler.DecisionReboot, "rebooting")
	writeFile(t, n.policy, etcdLockPolicy(srv.Endpoints[0]))
	n.rebooted()
	n.start()
	clock.Advance(2 * time.Minute)
	n.expect(scheduler.DecisionBlocked, `locker "file"`)
	clock.Advance(time.Hour)
	n.expect(scheduler.DecisionBlocked, `locker "file"`)
	if !holds(t, n.root, "node-a") || n.rt.agent.State().Phase == scheduler.PhaseIdle {
		t.Fatalf("the file slot was forgotten: phase %s, file locker %s", n.rt.agent.State().Phase, slotHolders(t, n.root))
	}
	if err := n.reload(fileLockPolicy()); err != nil {
		t.Fatalf("reload back to the slot's locker refused: %v", err)
	}
	n.expect(scheduler.DecisionIdle, "slot released")
	if holds(t, n.root, "node-a") {
		t.Fatalf("the file slot was not given back: %s", slotHolders(t, n.root))
	}
}

// pluginProcs counts the live built-in plugin processes of kind and name
// this test process runs for root.
func pluginProcs(t *testing.T, root, kind, name string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	want := "plugin\x00serve\x00" + kind + "\x00" + name + "\x00"
	n := 0
	for _, e := range ents {
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid …; comm may hold spaces, so cut at ')'.
		f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(f) < 2 || f[0] == "Z" || f[1] != fmt.Sprint(os.Getpid()) {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		environ, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if strings.Contains(string(cmdline), want) && strings.Contains(string(environ), "OFFPEAK_ROOT="+root+"\x00") {
			n++
		}
	}
	return n
}

// A strategy that takes no slot still gives back the one the node holds:
// switched to "off" mid-cycle, the agent releases the slot through the
// locker it was taken from, after its post-boot checks.
func TestReloadToStrategyOffGivesTheSlotBack(t *testing.T) {
	clock := fakeClock(t, "2025-06-03T02:10:00Z")
	n := newReloadNode(t, clock, fileLockPolicy())
	n.expect(scheduler.DecisionReboot, "rebooting")
	off := strings.Replace(fileLockPolicy(), `strategy = "window"`, `strategy = "off"`, 1)
	if err := n.reload(off); err != nil {
		t.Fatalf("reload to strategy off refused: %v", err)
	}
	n.rebooted()
	n.expect(scheduler.DecisionPostBoot, "grace")
	clock.Advance(2 * time.Minute)
	n.expect(scheduler.DecisionIdle, "post-boot checks passed")
	if holds(t, n.root, "node-a") {
		t.Fatalf("the slot was forgotten in the file locker: %s", slotHolders(t, n.root))
	}
	// The same holds for an agent started on the new policy after the reboot.
	n2 := newReloadNode(t, clock, fileLockPolicy())
	n2.expect(scheduler.DecisionReboot, "rebooting")
	writeFile(t, n2.policy, off)
	n2.rebooted()
	n2.start()
	n2.expect(scheduler.DecisionPostBoot, "grace")
	clock.Advance(2 * time.Minute)
	n2.expect(scheduler.DecisionIdle, "post-boot checks passed")
	if holds(t, n2.root, "node-a") {
		t.Fatalf("the slot was forgotten after a restart on strategy off: %s", slotHolders(t, n2.root))
	}
}

// The real agent process, holding a slot, gets SIGHUP for a policy that
// moves the lock directory: it refuses, logs why, keeps running, and
// `offpeak status` shows the refusal until a reload goes through.
func TestSIGHUPRefusedWhileHolding(t *testing.T) {
	root := t.TempDir()
	touch(t, filepath.Join(root, "run/reboot-required"))
	pol := writeFile(t, filepath.Join(root, "policy.toml"), "strategy = \"etcd-lock\"\n[node]\nid = \"node-a\"\ngroup = \"web\"\n[lock]\nplugin = \"file\"\n[lock.config]\ndir = \"/locks\"\n")
	cmd := exec.Command(os.Args[0], "--root", root, "agent", "--policy", pol, "--coordinator-conf", "off")
	cmd.Env = append(os.Environ(), envExec+"=1", "OFFPEAK_CLI_TEST_REBOOTER=record")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); cmd.Wait() })
	waitLog := func(s string) {
		t.Helper()
		select {
		case <-stderr.seen(s):
		case <-time.After(2 * time.Minute): // hang guard only
			t.Fatalf("agent never logged %q:\n%s", s, stderr.String())
		}
	}
	waitLog("decision=reboot")
	writeFile(t, pol, "strategy = \"etcd-lock\"\n[node]\nid = \"node-a\"\ngroup = \"web\"\n[lock]\nplugin = \"file\"\n[lock.config]\ndir = \"/elsewhere\"\n")
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitLog("policy not reloaded")
	out, _, code := run(t, &App{Root: root}, "status")
	if code != 0 || !strings.Contains(out, "policy reload refused") || !strings.Contains(out, "other [lock.config] settings") {
		t.Fatalf("status:\n%s\nagent log:\n%s", out, stderr.String())
	}
	if !holds(t, root, "node-a") {
		t.Fatalf("slot lost: %s", slotHolders(t, root))
	}
	// Still running, it takes a reload that leaves the slot where it is.
	writeFile(t, pol, "strategy = \"etcd-lock\"\n[node]\nid = \"node-a\"\ngroup = \"web\"\n[lock]\nplugin = \"file\"\ntimeout = \"20s\"\n[lock.config]\ndir = \"/locks\"\n")
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitLog("msg=\"policy reloaded\"")
	if out, _, _ := run(t, &App{Root: root}, "status"); strings.Contains(out, "policy reload refused") {
		t.Fatalf("status still shows the refusal:\n%s", out)
	}
}
