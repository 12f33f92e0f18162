package cli

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/offpeak/offpeak/internal/coordinator"
	"github.com/offpeak/offpeak/plugins"
	"github.com/offpeak/offpeak/scheduler"
)

// stubLocker answers every call at once.
type stubLocker struct{}

func (*stubLocker) Acquire(context.Context, plugins.AcquireRequest) (plugins.AcquireResult, error) {
	return plugins.AcquireResult{}, nil
}
func (*stubLocker) Release(context.Context, plugins.ReleaseRequest) error { return nil }
func (*stubLocker) Status(context.Context, string) (plugins.LockState, error) {
	return plugins.LockState{}, nil
}
func (*stubLocker) Wait(context.Context, string, uint64) (plugins.LockState, error) {
	return plugins.LockState{}, nil
}
func (*stubLocker) Freeze(context.Context, plugins.FreezeRequest) error { return nil }

// syncBuffer is a writer shared by goroutines that signals when a wanted
// text shows up.
type syncBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	waiters map[string]chan struct{}
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.buf.Write(p)
	for s, ch := range b.waiters {
		if strings.Contains(b.buf.String(), s) {
			close(ch)
			delete(b.waiters, s)
		}
	}
	return n, err
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// seen returns a channel closed once s has been written.
func (b *syncBuffer) seen(s string) <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	ch := make(chan struct{})
	if strings.Contains(b.buf.String(), s) {
		close(ch)
		return ch
	}
	if b.waiters == nil {
		b.waiters = map[string]chan struct{}{}
	}
	b.waiters[s] = ch
	return ch
}

// notifySocket listens like systemd's notify socket and records datagrams.
type notifySocket struct {
	mu    sync.Mutex
	msgs  []string
	added chan struct{}
}

func listenNotify(t *testing.T) *notifySocket {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	s := &notifySocket{added: make(chan struct{}, 1)}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			s.mu.Lock()
			s.msgs = append(s.msgs, string(buf[:n]))
			s.mu.Unlock()
			select {
			case s.added <- struct{}{}:
			default:
			}
		}
	}()
	return s
}

// waitFor blocks until cond holds for the datagrams so far, or fails after
// a deadline.
func (s *notifySocket) waitFor(t *testing.T, what string, cond func([]string) bool) []string {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		s.mu.Lock()
		msgs := append([]string(nil), s.msgs...)
		s.mu.Unlock()
		if cond(msgs) {
			return msgs
		}
		select {
		case <-s.added:
		case <-deadline:
			t.Fatalf("timed out waiting for %s; datagrams: %q", what, msgs)
		}
	}
}

func index(msgs []string, prefix string) int {
	for i, m := range msgs {
		if strings.HasPrefix(m, prefix) {
			return i
		}
	}
	return -1
}

func count(msgs []string, m string) int {
	n := 0
	for _, x := range msgs {
		if x == m {
			n++
		}
	}
	return n
}

func flockHeld(t *testing.T, path string) bool {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return true
	}
	return false
}

// The agent under systemd: READY=1, STATUS= per decision and watchdog pings
// on the notify socket, metrics on a unix socket, coordinator.conf locked
// with STATE=running, a second agent refused, and everything released on
// shutdown with STOPPING=1.
func TestAgentOpsUnderSystemd(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "etc/machine-id"), "node-a\n")
	if err := os.MkdirAll(filepath.Join(root, "run/update-engine"), 0o755); err != nil {
		t.Fatal(err)
	}
	sock := listenNotify(t)
	// 200ms watchdog: pings every 100ms.
	t.Setenv("WATCHDOG_USEC", "200000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	metricsSock := filepath.Join(t.TempDir(), "metrics.sock")

	var stderr syncBuffer
	app := &App{Root: root, Stdin: strings.NewReader(""), Stdout: io.Discard, Stderr: &stderr, Now: time.Now, Exe: os.Args[0]}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	exit := make(chan int, 1)
	go func() { exit <- app.Run(ctx, []string{"agent", "--metrics-listen", "unix:" + metricsSock}) }()

	msgs := sock.waitFor(t, "READY=1, a decision and 3 watchdog pings", func(m []string) bool {
		return index(m, "READY=1") >= 0 && index(m, "STATUS=idle: ") >= 0 && count(m, "WATCHDOG=1") >= 3
	})
	if r, s := index(msgs, "READY=1"), index(msgs, "STATUS=idle: "); r > s {
		t.Errorf("READY=1 (#%d) after the first decision (#%d): %q", r, s, msgs)
	}
	if !strings.Contains(msgs[index(msgs, "STATUS=idle: ")], "no update staged") {
		t.Errorf("status without the reason: %q", msgs)
	}

	// The notifier is the last observer, so the metrics and coordinator.conf
	// already show the decision.
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", metricsSock)
	}}}
	resp, err := c.Get("http://offpeak/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`offpeak_phase{phase="idle"} 1`, `offpeak_decision{decision="idle"} 1`, "offpeak_slot_held 0", "offpeak_next_window_seconds "} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	conf := filepath.Join(root, coordinator.Path)
	kv, err := coordinator.Read(conf)
	if err != nil {
		t.Fatal(err)
	}
	if kv["NAME"] != "offpeak" || kv["STRATEGY"] != "window" || kv["STATE"] != "running" {
		t.Errorf("coordinator.conf = %v", kv)
	}
	if !flockHeld(t, conf) {
		t.Error("coordinator.conf not locked while the agent runs")
	}

	// A second agent on the same host is refused at once.
	_, errOut, code := run(t, &App{Root: root}, "agent", "--coordinator-conf", "off")
	if code == 0 || !strings.Contains(errOut, "another offpeak agent is running") {
		t.Errorf("second agent: exit %d, stderr %q", code, errOut)
	}

	cancel()
	select {
	case code := <-exit:
		if code != 0 {
			t.Fatalf("agent exit %d: %s", code, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("agent did not stop")
	}
	sock.waitFor(t, "STOPPING=1", func(m []string) bool { return index(m, "STOPPING=1") >= 0 })
	if flockHeld(t, conf) {
		t.Error("coordinator.conf still locked after shutdown")
	}
	if flockHeld(t, filepath.Join(root, "run/offpeak/agent.lock")) {
		t.Error("agent lock still held after shutdown")
	}
	if _, err := os.Stat(metricsSock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("metrics socket left behind: %v", err)
	}
}

func TestAgentRefusesWhenAnotherCoordinatorRuns(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "etc/machine-id"), "node-a\n")
	conf := writeFile(t, filepath.Join(root, coordinator.Path), "NAME=locksmithd\nSTRATEGY=reboot\nSTATE=running\n")
	f, err := os.Open(conf)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := run(t, &App{Root: root}, "agent")
	if code == 0 || !strings.Contains(errOut, "NAME=locksmithd") || !strings.Contains(errOut, "locksmithd") {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
}

func TestCoordinatorConfModes(t *testing.T) {
	tests := []struct {
		mode      string
		mkdir     bool
		wantFile  bool
		wantError bool
	}{
		{"auto", false, false, false},
		{"auto", true, true, false},
		{"on", false, true, false},
		{"off", true, false, false},
		{"sometimes", true, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.mode+"/dir="+strconv.FormatBool(tt.mkdir), func(t *testing.T) {
			root := t.TempDir()
			if tt.mkdir {
				if err := os.MkdirAll(filepath.Join(root, "run/update-engine"), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			var logs syncBuffer
			a := &App{Root: root, Now: time.Now, Logger: newLogger(&logs, "debug")}
			pol, err := a.LoadPolicy("")
			if err != nil {
				t.Fatal(err)
			}
			o, err := a.startOps(context.Background(), pol, opsFlags{coordinatorConf: tt.mode})
			if (err != nil) != tt.wantError {
				t.Fatalf("startOps error %v, want error %v", err, tt.wantError)
			}
			defer o.Stop()
			_, serr := os.Stat(filepath.Join(root, coordinator.Path))
			if (serr == nil) != tt.wantFile {
				t.Fatalf("coordinator.conf exists=%v, want %v", serr == nil, tt.wantFile)
			}
		})
	}
}

// Without --metrics-listen the locker is passed through untouched, and a
// nil runtime (offpeak check) is safe to use.
func TestOpsRuntimeWithoutMetrics(t *testing.T) {
	a := &App{Root: t.TempDir(), Now: time.Now, Logger: newLogger(io.Discard, "error")}
	pol, err := a.LoadPolicy("")
	if err != nil {
		t.Fatal(err)
	}
	o, err := a.startOps(context.Background(), pol, opsFlags{coordinatorConf: coordinatorOff})
	if err != nil {
		t.Fatal(err)
	}
	l := &stubLocker{}
	if o.WrapLocker(l) != l {
		t.Error("locker wrapped although metrics are off")
	}
	o.WatchPlugins(func() map[string]int { return nil })
	if o.MetricsAddr() != "" {
		t.Error("metrics address without --metrics-listen")
	}
	o.Stop()
	o.Stop() // idempotent

	var none *opsRuntime
	if none.Observer() != nil || none.WrapLocker(l) != l || none.MetricsAddr() != "" {
		t.Error("nil opsRuntime is not a no-op")
	}
	none.Ready("x")
	none.Stop()
}

func TestOpsRuntimeWrapsLockerWithMetrics(t *testing.T) {
	a := &App{Root: t.TempDir(), Now: time.Now, Logger: newLogger(io.Discard, "error")}
	pol, err := a.LoadPolicy("")
	if err != nil {
		t.Fatal(err)
	}
	o, err := a.startOps(context.Background(), pol, opsFlags{metricsListen: "127.0.0.1:0", coordinatorConf: coordinatorOff})
	if err != nil {
		t.Fatal(err)
	}
	defer o.Stop()
	l := &stubLocker{}
	w := o.WrapLocker(l)
	if w == l {
		t.Fatal("locker not wrapped with metrics on")
	}
	if _, err := w.Status(context.Background(), "web"); err != nil {
		t.Fatal(err)
	}
	o.WatchPlugins(func() map[string]int { return map[string]int{"etcd": 3} })
	resp, err := http.Get("http://" + o.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`offpeak_locker_request_duration_seconds_count{method="status"} 1`, `offpeak_plugin_restarts_total{plugin="etcd"} 3`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// The acceptance scenario: one node goes through an update with real
// plugin processes (file locker), and `curl` of the metrics endpoint after
// each pass shows the phase changing, while coordinator.conf follows.
func TestScenarioPhaseVisibleThroughCurl(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl not installed (Debian: apt-get install curl)")
	}
	root := t.TempDir()
	polPath := writeFile(t, filepath.Join(root, "policy.toml"), `
strategy = "window"
[node]
id = "node-a"
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
`)
	bootFile := filepath.Join(root, "proc/sys/kernel/random/boot_id")
	writeFile(t, bootFile, "boot-0\n")
	touch(t, filepath.Join(root, "run/reboot-required"))
	if err := os.MkdirAll(filepath.Join(root, "run/update-engine"), 0o755); err != nil {
		t.Fatal(err)
	}
	clock := scheduler.NewFakeClock(time.Date(2026, 6, 2, 1, 0, 0, 0, time.UTC))
	clock.SetAutoAdvance(true)
	rb := &recordingRebooter{}
	a := &App{Root: root, Rebooter: rb, Stdout: io.Discard, Stderr: io.Discard, Now: clock.Now, Exe: os.Args[0], Logger: newLogger(io.Discard, "error")}
	pol, err := a.LoadPolicy(polPath)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ops, err := a.startOps(ctx, pol, opsFlags{metricsListen: "127.0.0.1:0", coordinatorConf: coordinatorAuto})
	if err != nil {
		t.Fatal(err)
	}
	defer ops.Stop()
	var rt *runtime
	start := func() {
		t.Helper()
		if rt != nil {
			rt.Close()
		}
		if rt, err = a.buildAgent(ctx, pol, agentFlags{clock: clock, observer: ops.Observer()}); err != nil {
			t.Fatal(err)
		}
	}
	start()
	defer func() { rt.Close() }()

	url := "http://" + ops.MetricsAddr() + "/metrics"
	scrape := func() map[string]string {
		t.Helper()
		out, err := exec.Command(curl, "--silent", "--show-error", "--fail", "--max-time", "10", url).Output()
		if err != nil {
			t.Fatalf("curl %s: %v", url, err)
		}
		m := map[string]string{}
		for _, line := range strings.Split(string(out), "\n") {
			if i := strings.LastIndexByte(line, ' '); i > 0 && strings.HasPrefix(line, "offpeak_") {
				m[line[:i]] = line[i+1:]
			}
		}
		return m
	}
	steps := []struct {
		name     string
		before   func()
		decision scheduler.Decision
		phase    scheduler.Phase
		state    string // coordinator.conf STATE
		extra    map[string]string
	}{
		{"staged, before the window", nil, scheduler.DecisionWaitWindow, scheduler.PhaseIdle, "reboot-planned",
			map[string]string{`offpeak_next_window_seconds`: "3600", `offpeak_staged_info{version=""}`: "1"}},
		{"window open: slot, reboot", func() { clock.Set(time.Date(2026, 6, 2, 2, 0, 0, 0, time.UTC)) }, scheduler.DecisionReboot, scheduler.PhaseRebooting, "rebooting",
			map[string]string{"offpeak_slot_held": "1", "offpeak_reboots_total": "1"}},
		{"new boot, grace period", func() {
			writeFile(t, bootFile, "boot-1\n")
			os.Remove(filepath.Join(root, "run/reboot-required"))
			start()
		}, scheduler.DecisionPostBoot, scheduler.PhasePostBoot, "running", map[string]string{"offpeak_slot_held": "1", "offpeak_reboots_total": "1"}},
		{"post-boot checks pass, slot released", func() { clock.Advance(2 * time.Minute) }, scheduler.DecisionIdle, scheduler.PhaseIdle, "running",
			map[string]string{"offpeak_slot_held": "0", "offpeak_reboots_total": "1"}},
	}
	var phases []string
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if st.before != nil {
				st.before()
			}
			r, err := rt.agent.Step(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if r.Decision != st.decision || r.Phase != st.phase {
				t.Fatalf("decision %s phase %s (%s), want %s/%s", r.Decision, r.Phase, r.Reason, st.decision, st.phase)
			}
			m := scrape()
			var current []string
			for k, v := range m {
				if p, ok := strings.CutPrefix(k, `offpeak_phase{phase="`); ok && v == "1" {
					current = append(current, strings.TrimSuffix(p, `"}`))
				}
			}
			t.Logf("curl: offpeak_phase=%s offpeak_decision{decision=%q}=%s slot_held=%s reboots_total=%s",
				strings.Join(current, ","), st.decision, m[`offpeak_decision{decision="`+string(st.decision)+`"}`], m["offpeak_slot_held"], m["offpeak_reboots_total"])
			if len(current) != 1 || current[0] != string(st.phase) {
				t.Fatalf("curl shows phase %v, want %s", current, st.phase)
			}
			phases = append(phases, current[0])
			if m[`offpeak_decision{decision="`+string(st.decision)+`"}`] != "1" {
				t.Errorf("decision %s not at 1", st.decision)
			}
			for k, v := range st.extra {
				if m[k] != v {
					t.Errorf("%s = %q, want %q", k, m[k], v)
				}
			}
			if kv, _ := coordinator.Read(filepath.Join(root, coordinator.Path)); kv["STATE"] != st.state {
				t.Errorf("coordinator.conf STATE=%s, want %s", kv["STATE"], st.state)
			}
		})
	}
	if got := strings.Join(phases, " → "); got != "idle → rebooting → post-boot → idle" {
		t.Fatalf("phases through curl: %s", got)
	}
	rb.mu.Lock()
	defer rb.mu.Unlock()
	if rb.calls != 1 {
		t.Fatalf("%d reboots, want 1", rb.calls)
	}
}
