package exec

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/offpeak/offpeak/internal/checks/checktest"
	"github.com/offpeak/offpeak/plugins"
)

func newCheck(t *testing.T) *Check {
	t.Helper()
	c := New(nil).(*Check)
	checktest.Clock(&c.Base)
	return c
}

func request(t *testing.T, cfg any) plugins.CheckRequest {
	t.Helper()
	return checktest.Request(t, "probe", plugins.PhasePreReboot, cfg)
}

func TestCheckOutcomes(t *testing.T) {
	dir := t.TempDir()
	noExec := filepath.Join(dir, "not-executable")
	if err := os.WriteFile(noExec, []byte("#!/bin/sh\nexit 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		cfg        map[string]any
		want       plugins.Outcome
		wantReason string // substring
		exitCode   string // Details["exit_code"], "" for none
		signal     string // Details["signal"], "" for none
	}{
		{"exit 0 passes", map[string]any{"argv": []string{"true"}}, plugins.Pass, "exit status 0", "", ""},
		{"non-zero exit fails with status and last output lines",
			map[string]any{"argv": []string{"/bin/sh", "-c", "echo first; echo second; echo third >&2; echo fourth; exit 3"}},
			plugins.Fail, "exit status 3: second | third | fourth", "3", ""},
		{"non-zero exit without output", map[string]any{"argv": []string{"false"}}, plugins.Fail, "exit status 1", "1", ""},
		{"killed by a signal fails", map[string]any{"argv": []string{"/bin/sh", "-c", "kill -TERM $$"}}, plugins.Fail, "terminated by signal SIGTERM", "", "terminated"},
		{"unknown program is an error", map[string]any{"argv": []string{"offpeak-no-such-program"}}, plugins.Error, "not found", "", ""},
		{"missing path is an error", map[string]any{"argv": []string{filepath.Join(dir, "absent")}}, plugins.Error, "cannot start", "", ""},
		{"file without exec bit is an error", map[string]any{"argv": []string{noExec}}, plugins.Error, "permission denied", "", ""},
		{"missing working directory is an error", map[string]any{"argv": []string{"true"}, "dir": filepath.Join(dir, "nodir")}, plugins.Error, "cannot start", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := checktest.Run(t, t.Context(), newCheck(t), request(t, tt.cfg))
			checktest.Expect(t, res, tt.want, tt.wantReason)
			if res.Details["exit_code"] != tt.exitCode || res.Details["signal"] != tt.signal {
				t.Fatalf("details %v, want exit_code %q and signal %q", res.Details, tt.exitCode, tt.signal)
			}
		})
	}
}

// The argv reaches the program as given: no shell expands, splits or
// interprets any of it.
func TestArgvIsNotInterpretedByAShell(t *testing.T) {
	args := []string{"$HOME", "a b", "x; exit 7", "`id`", "*", "$(false)", "'q'", `"dq"`, "> /dev/null", ""}
	argv := append([]string{"printf", `[%s]\n`}, args...)
	res := checktest.Run(t, t.Context(), newCheck(t), request(t, map[string]any{"argv": argv}))
	checktest.Expect(t, res, plugins.Pass, "exit status 0")
	var want strings.Builder
	for _, a := range args {
		want.WriteString("[" + a + "]\n")
	}
	if got := res.Details["output"]; got != want.String() {
		t.Fatalf("output %q, want every argument verbatim: %q", got, want.String())
	}
}

func TestBadConfigIsInvalidArgument(t *testing.T) {
	tests := []struct {
		name string
		cfg  string
	}{
		{"missing argv", `{}`},
		{"empty argv", `{"argv":[]}`},
		{"empty program", `{"argv":[""]}`},
		{"unknown key", `{"argv":["true"],"shell":"bash"}`},
		{"argv not a list", `{"argv":"true"}`},
		{"negative max_output", `{"argv":["true"],"max_output":-1}`},
		{"huge max_output", `{"argv":["true"],"max_output":1073741824}`},
		{"relative dir", `{"argv":["true"],"dir":"tmp"}`},
		{"env entry without =", `{"argv":["true"],"env":["NOVALUE"]}`},
		{"env name with =", `{"argv":["true"],"env":{"A=B":"c"}}`},
		{"env of wrong type", `{"argv":["true"],"env":7}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := plugins.CheckRequest{Name: "bad", Config: json.RawMessage(tt.cfg)}
			_, err := newCheck(t).Check(t.Context(), req)
			checktest.InvalidArgument(t, err)
		})
	}
}

func TestEnvironmentIsMinimal(t *testing.T) {
	t.Setenv("OFFPEAK_TEST_SECRET", "do-not-inherit")
	binDir := t.TempDir()
	// A program found only through the agent's PATH proves PATH is inherited.
	if err := os.WriteFile(filepath.Join(binDir, "offpeak-test-env"), []byte("#!/bin/sh\nexec env\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", binDir+":"+os.Getenv("PATH"))

	for _, tt := range []struct {
		name string
		env  any
	}{
		{"env as table", map[string]string{"A": "1", "B": "x=y"}},
		{"env as list", []string{"A=1", "B=x=y"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			res, err := newCheck(t).Check(t.Context(), request(t, map[string]any{"argv": []string{"offpeak-test-env"}, "env": tt.env}))
			if err != nil || res.Outcome != plugins.Pass {
				t.Fatalf("got %v %+v", err, res)
			}
			got := map[string]string{}
			for _, l := range strings.Split(strings.TrimSpace(res.Details["output"]), "\n") {
				k, v, _ := strings.Cut(l, "=")
				got[k] = v
			}
			want := map[string]string{
				"A": "1", "B": "x=y", "PATH": os.Getenv("PATH"),
				"OFFPEAK_CHECK": "probe", "OFFPEAK_PHASE": "pre-reboot",
				"OFFPEAK_NODE_ID": "node-1", "OFFPEAK_GROUP": "web",
			}
			for k, v := range want {
				if got[k] != v {
					t.Errorf("%s = %q, want %q", k, got[k], v)
				}
			}
			if _, ok := got["OFFPEAK_TEST_SECRET"]; ok {
				t.Errorf("agent environment leaked into the command: %v", got)
			}
		})
	}
}

func TestConfiguredPathIsUsedForLookup(t *testing.T) {
	binDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(binDir, "offpeak-only-here"), []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	res, err := newCheck(t).Check(t.Context(), request(t, map[string]any{
		"argv": []string{"offpeak-only-here"},
		"env":  map[string]string{"PATH": binDir + ":/usr/bin:/bin"},
	}))
	if err != nil || res.Outcome != plugins.Pass {
		t.Fatalf("got %v %+v", err, res)
	}
}

func TestWorkingDirectory(t *testing.T) {
	dir := t.TempDir()
	res, err := newCheck(t).Check(t.Context(), request(t, map[string]any{"argv": []string{"pwd", "-P"}, "dir": dir}))
	if err != nil || res.Outcome != plugins.Pass {
		t.Fatalf("got %v %+v", err, res)
	}
	want, _ := filepath.EvalSymlinks(dir)
	if got := strings.TrimSpace(res.Details["output"]); got != want {
		t.Fatalf("pwd = %q, want %q", got, want)
	}
}

func TestOutputIsCappedToTheLastBytes(t *testing.T) {
	script := `i=0; while [ $i -lt 500 ]; do echo "line $i"; i=$((i+1)); done; exit 2`
	res, err := newCheck(t).Check(t.Context(), request(t, map[string]any{"argv": []string{"/bin/sh", "-c", script}, "max_output": 64}))
	if err != nil || res.Outcome != plugins.Fail {
		t.Fatalf("got %v %+v", err, res)
	}
	out := res.Details["output"]
	if !strings.HasPrefix(out, "…") || len(out) > 64+len("…") || !strings.HasSuffix(out, "line 499\n") {
		t.Fatalf("output = %q, want the last 64 bytes marked as cut", out)
	}
	if !strings.HasSuffix(res.Reason, "line 499") || len(res.Reason) > 400 {
		t.Fatalf("reason = %q", res.Reason)
	}
	if res.Details["exit_code"] != "2" {
		t.Fatalf("exit_code = %q", res.Details["exit_code"])
	}
}

func TestTimeoutIsAnError(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	pidFile := filepath.Join(t.TempDir(), "pid")
	argv := []string{"sh", "-c", `echo $$ > "$0"; exec sleep 30`, pidFile}
	res := checktest.Run(t, ctx, newCheck(t), request(t, map[string]any{"argv": argv}))
	checktest.Expect(t, res, plugins.Error)
	if !strings.HasPrefix(res.Reason, "timed out after") {
		t.Fatalf("reason %q, want it to name the timeout", res.Reason)
	}
	// The command is killed, not waited for: it is gone when Check returns.
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatalf("the command never started: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("process %d still exists after the timeout (kill 0: %v)", pid, err)
	}
}

func TestCanceledBeforeStart(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	res, err := newCheck(t).Check(ctx, request(t, map[string]any{"argv": []string{"true"}}))
	if err != nil || res.Outcome != plugins.Error || res.Reason != "canceled" {
		t.Fatalf("got %v %+v", err, res)
	}
}

// manualDeadline is a context whose deadline the test fires at a chosen
// moment, so the timeout path runs exactly when the process tree is known.
type manualDeadline struct {
	context.Context
	deadline time.Time
	done     chan struct{}
	once     sync.Once
}

func newManualDeadline() *manualDeadline {
	return &manualDeadline{Context: context.Background(), deadline: time.Now().Add(5 * time.Second), done: make(chan struct{})}
}
func (m *manualDeadline) Deadline() (time.Time, bool) { return m.deadline, true }
func (m *manualDeadline) Done() <-chan struct{}       { return m.done }
func (m *manualDeadline) fire()                       { m.once.Do(func() { close(m.done) }) }
func (m *manualDeadline) Err() error {
	select {
	case <-m.done:
		return context.DeadlineExceeded
	default:
		return nil
	}
}

// TestNoGrandchildSurvives starts a command that leaves a background child
// and checks that the child is dead when Check returns, both when the
// deadline kills the command and when the command exits on its own.
func TestNoGrandchildSurvives(t *testing.T) {
	tests := []struct {
		name        string
		script      string
		fireTimeout bool
		want        plugins.Outcome
	}{
		{"deadline kills the process group", `sleep 60 & echo $! > "$1"; wait`, true, plugins.Error},
		{"background child of a finished command is killed", `sleep 60 & echo $! > "$1"; exit 0`, false, plugins.Pass},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fifo := filepath.Join(t.TempDir(), "pid")
			if err := unix.Mkfifo(fifo, 0o600); err != nil {
				t.Fatal(err)
			}
			// O_RDWR so opening does not wait for the writer.
			f, err := os.OpenFile(fifo, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { f.Close() })
			pidc := make(chan int, 1)
			go func() {
				line, _ := bufio.NewReader(f).ReadString('\n')
				pid, _ := strconv.Atoi(strings.TrimSpace(line))
				pidc <- pid
			}()

			ctx := newManualDeadline()
			type ret struct {
				res plugins.CheckResult
				err error
			}
			done := make(chan ret, 1)
			c, req := newCheck(t), request(t, map[string]any{"argv": []string{"/bin/sh", "-c", tt.script, "sh", fifo}})
			go func() {
				res, err := c.Check(ctx, req)
				done <- ret{res, err}
			}()

			var pid int
			select {
			case pid = <-pidc:
			case r := <-done:
				if tt.fireTimeout {
					t.Fatalf("Check returned before the child started: %+v %v", r.res, r.err)
				}
				pid = <-pidc
				done <- r
			}
			if pid <= 0 {
				t.Fatal("no child pid reported")
			}
			// A pidfd pins the child's identity, so reuse of the pid cannot
			// fool the liveness test below.
			pidfd, err := unix.PidfdOpen(pid, 0)
			if err != nil && !errors.Is(err, syscall.ESRCH) {
				t.Fatal(err)
			}
			if tt.fireTimeout {
				ctx.fire()
			}
			r := <-done
			if r.err != nil || r.res.Outcome != tt.want {
				t.Fatalf("got %v %+v, want %s", r.err, r.res, tt.want)
			}
			if tt.fireTimeout && !strings.HasPrefix(r.res.Reason, "timed out after") {
				t.Fatalf("reason = %q", r.res.Reason)
			}
			if pidfd < 0 || err != nil {
				return // already gone before it could be pinned
			}
			defer unix.Close(pidfd)
			// The kill was sent before Check returned; POLLIN on a pidfd
			// reports the exit. The bound only stops a broken build from
			// hanging; a survivor never becomes readable.
			fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
			n, err := unix.Poll(fds, 10_000)
			if err != nil {
				t.Fatal(err)
			}
			if n == 0 {
				_ = unix.PidfdSendSignal(pidfd, unix.SIGKILL, nil, 0)
				t.Fatalf("background child %d survived the check", pid)
			}
		})
	}
}

func TestTailBuffer(t *testing.T) {
	tests := []struct {
		name   string
		max    int
		writes []string
		want   string
	}{
		{"fits", 10, []string{"abc", "def"}, "abcdef"},
		{"exactly full", 6, []string{"abc", "def"}, "abcdef"},
		{"drops the oldest bytes", 4, []string{"abc", "def"}, "…cdef"},
		{"one large write", 3, []string{"abcdefgh"}, "…fgh"},
		{"large write after small", 3, []string{"a", "bcd"}, "…bcd"},
		{"invalid utf-8 is replaced", 10, []string{"a\xffb"}, "a\uFFFDb"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &tailBuffer{max: tt.max}
			for _, w := range tt.writes {
				if n, err := b.Write([]byte(w)); n != len(w) || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			if got := b.String(); got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}
