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
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/offpeak/offpeak/lockers/etcd/etcdtest"
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
