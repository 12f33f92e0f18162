package pluginhost

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/offpeak/offpeak/plugins"
)

func TestBackoffDelay(t *testing.T) {
	b := Backoff{Min: time.Second, Max: 10 * time.Second}
	for n, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 4: 8 * time.Second, 5: 10 * time.Second, 40: 10 * time.Second} {
		if got := b.delay(n); got != want {
			t.Errorf("delay(%d) = %s, want %s", n, got, want)
		}
	}
}

func TestLazyStart(t *testing.T) {
	e := newEnv(t)
	m := e.manager(t, e.options())
	l := mustLocker(t, m, "mem", "")
	c, err := m.Check("mem")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Configure(context.Background(), []byte(`{"label":"x"}`)); err != nil {
		t.Fatal(err)
	}
	if pids := e.pids(); len(pids) != 0 {
		t.Fatalf("plugin processes %v started before the first call", pids)
	}
	if _, err := l.Status(context.Background(), "g"); err != nil {
		t.Fatal(err)
	}
	if pids := e.pids(); len(pids) != 1 {
		t.Fatalf("after the first locker call: processes %v, want 1", pids)
	}
	if _, err := c.Check(context.Background(), plugins.CheckRequest{Name: "x", Phase: plugins.PhasePreReboot}); err != nil {
		t.Fatal(err)
	}
	if pids := e.pids(); len(pids) != 2 {
		t.Fatalf("after the first check call: processes %v, want 2", pids)
	}
}

func TestLockerThroughPlugin(t *testing.T) {
	e := newEnv(t)
	m := e.manager(t, e.options())
	l := mustLocker(t, m, "mem", "")
	ctx := ctxTimeout(t, 30*time.Second)
	deadline := time.Date(2026, 3, 1, 3, 0, 0, 0, time.UTC)

	res, err := l.Acquire(ctx, plugins.AcquireRequest{Group: "web", Slots: 1, Holder: plugins.Holder{ID: "n1", Hostname: "h1", Deadline: deadline, Meta: map[string]string{"k": "v"}}})
	if err != nil || !res.Granted {
		t.Fatalf("Acquire n1: %+v, %v", res, err)
	}
	got := res.State.Holders[0]
	if got.ID != "n1" || got.Hostname != "h1" || !got.Deadline.Equal(deadline) || got.Meta["k"] != "v" || !got.AcquiredAt.IsZero() {
		t.Fatalf("holder did not round-trip: %+v", got)
	}
	res, err = l.Acquire(ctx, plugins.AcquireRequest{Group: "web", Slots: 1, Holder: plugins.Holder{ID: "n2"}})
	if err != nil || res.Granted {
		t.Fatalf("Acquire n2 with one slot taken: %+v, %v", res, err)
	}

	waited := make(chan plugins.LockState, 1)
	go func() {
		st, err := l.Wait(ctx, "web", res.State.Revision)
		if err != nil {
			t.Errorf("Wait: %v", err)
		}
		waited <- st
	}()
	if err := l.Release(ctx, plugins.ReleaseRequest{Group: "web", ID: "n1"}); err != nil {
		t.Fatal(err)
	}
	if st := <-waited; st.Revision == res.State.Revision || st.Holds("n1") {
		t.Fatalf("Wait returned %+v after release", st)
	}

	st, err := l.SetSlots(ctx, "web", 3)
	if err != nil || st.Slots != 3 {
		t.Fatalf("SetSlots: %+v, %v", st, err)
	}
	at := time.Date(2026, 3, 1, 4, 0, 0, 0, time.UTC)
	if err := l.Freeze(ctx, plugins.FreezeRequest{Group: "web", Reason: "bad update", By: "n1", At: at}); err != nil {
		t.Fatal(err)
	}
	st, err = l.Status(ctx, "web")
	if err != nil || !st.Frozen || st.FrozenReason != "bad update" || st.FrozenBy != "n1" || !st.FrozenAt.Equal(at) {
		t.Fatalf("Status after Freeze: %+v, %v", st, err)
	}
	_, err = l.Acquire(ctx, plugins.AcquireRequest{Group: "web", Slots: 1, Holder: plugins.Holder{ID: "n3"}})
	if !errors.Is(err, plugins.ErrFrozen) {
		t.Fatalf("Acquire in a frozen group: %v, want ErrFrozen", err)
	}
	if err := l.Thaw(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	if res, err := l.Acquire(ctx, plugins.AcquireRequest{Group: "web", Slots: 1, Holder: plugins.Holder{ID: "n3"}}); err != nil || !res.Granted {
		t.Fatalf("Acquire after Thaw: %+v, %v", res, err)
	}
}

func TestCheckThroughPlugin(t *testing.T) {
	e := newEnv(t)
	m := e.manager(t, e.options())
	c, err := m.Check("mem")
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxTimeout(t, 30*time.Second)
	res, err := c.Check(ctx, plugins.CheckRequest{Name: "api", Phase: plugins.PhasePostBoot, Node: plugins.Node{ID: "n1"}, Config: []byte(`{"url":"http://x"}`)})
	if err != nil {
		t.Fatal(err)
	}
	if res.Outcome != plugins.Pass || res.Details["phase"] != "post-boot" || res.Details["config"] != `{"url":"http://x"}` || res.Time.IsZero() {
		t.Fatalf("Check: %+v", res)
	}
	res, err = c.Check(ctx, plugins.CheckRequest{Name: "fail", Phase: plugins.PhasePreReboot, Node: plugins.Node{ID: "n1"}})
	if err != nil || res.Outcome != plugins.Fail || res.Reason != "node n1 is busy" {
		t.Fatalf("failing check: %+v, %v", res, err)
	}
	if _, err := c.Check(ctx, plugins.CheckRequest{Name: "x", Phase: "sometime"}); !errors.Is(err, plugins.ErrInvalidArgument) {
		t.Fatalf("unknown phase: %v, want ErrInvalidArgument", err)
	}
}

func TestDeadlineReachesPlugin(t *testing.T) {
	e := newEnv(t)
	opts := e.options()
	opts.CallTimeout = 42 * time.Second
	m := e.manager(t, opts)
	c, err := m.Check("mem")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		ctx  func() context.Context
	}{
		{"caller deadline", func() context.Context { return ctxTimeout(t, 20*time.Second) }},
		{"default deadline", context.Background},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := tc.ctx()
			before := time.Now()
			res, err := c.Check(ctx, plugins.CheckRequest{Name: "deadline", Phase: plugins.PhasePreReboot})
			if err != nil {
				t.Fatal(err)
			}
			seen, err := time.Parse(time.RFC3339Nano, res.Details["deadline"])
			if err != nil {
				t.Fatalf("plugin saw no deadline: %+v", res)
			}
			want := before.Add(opts.CallTimeout)
			if dl, ok := ctx.Deadline(); ok {
				want = dl
			}
			// The plugin's deadline is the caller's, re-based on its clock.
			if seen.After(want.Add(time.Second)) || seen.Before(want.Add(-5*time.Second)) {
				t.Fatalf("plugin deadline %s, caller deadline %s", seen, want)
			}
		})
	}
}

func TestConfigSentAfterEveryStart(t *testing.T) {
	e := newEnv(t)
	m := e.manager(t, e.options())
	l := mustLocker(t, m, "mem", `{"label":"one"}`)
	ctx := ctxTimeout(t, 30*time.Second)
	label := func() string {
		t.Helper()
		st, err := l.Status(ctx, "config")
		if err != nil {
			t.Fatal(err)
		}
		return st.FrozenReason
	}
	if got := label(); got != "one" {
		t.Fatalf("label %q, want one", got)
	}
	if _, err := l.Status(ctx, "crash"); !errors.Is(err, ErrPluginDown) {
		t.Fatalf("crash: %v", err)
	}
	e.clock.Advance(time.Second)
	if got := label(); got != "one" {
		t.Fatalf("after restart: label %q, want one", got)
	}
	if err := l.Configure(ctx, []byte(`{"label":"two"}`)); err != nil {
		t.Fatal(err)
	}
	if got := label(); got != "two" {
		t.Fatalf("after Configure: label %q, want two", got)
	}
	err := l.Configure(ctx, []byte(`{"lable":"three"}`))
	if !errors.Is(err, plugins.ErrInvalidArgument) || !strings.Contains(err.Error(), "lable") {
		t.Fatalf("bad config: %v, want ErrInvalidArgument naming the key", err)
	}
	if _, err := l.Status(ctx, "g"); !errors.Is(err, plugins.ErrInvalidArgument) {
		t.Fatalf("call with a rejected config: %v, want ErrInvalidArgument", err)
	}
	if _, err := m.Locker("mem", []byte(`{not json`)); !errors.Is(err, plugins.ErrInvalidArgument) {
		t.Fatalf("config that is not JSON: %v", err)
	}
}

func TestSentinelErrorsRoundTrip(t *testing.T) {
	e := newEnv(t)
	m := e.manager(t, e.options())
	l := mustLocker(t, m, "mem", "")
	all := []error{plugins.ErrNotHolder, plugins.ErrFrozen, plugins.ErrConflict, plugins.ErrUnavailable, plugins.ErrInvalidArgument}
	for _, tc := range []struct {
		group string
		want  error
	}{
		{"err-notholder", plugins.ErrNotHolder},
		{"err-frozen", plugins.ErrFrozen},
		{"err-conflict", plugins.ErrConflict},
		{"err-unavailable", plugins.ErrUnavailable},
		{"err-invalid", plugins.ErrInvalidArgument},
		{"err-plain", nil},
	} {
		t.Run(tc.group, func(t *testing.T) {
			ctx := ctxTimeout(t, 30*time.Second)
			err := l.Release(ctx, plugins.ReleaseRequest{Group: tc.group, ID: "n1"})
			if err == nil {
				t.Fatal("no error")
			}
			for _, s := range all {
				if errors.Is(err, s) != (s == tc.want) {
					t.Errorf("errors.Is(%v, %v) = %t", err, s, errors.Is(err, s))
				}
			}
			if errors.Is(err, ErrPluginDown) || errors.Is(err, ErrBadAnswer) {
				t.Errorf("a plugin's own error is not a host failure: %v", err)
			}
			want := "testplugin says " + strings.TrimPrefix(tc.group, "err-") + ": " + errText(tc.want)
			if tc.want == nil {
				want = "testplugin: plain failure"
			}
			if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), `plugin "mem" (locker): Locker.Release`) {
				t.Errorf("message %q lacks %q", err, want)
			}
		})
	}
	if r := m.Restarts(); len(r) != 0 {
		t.Fatalf("errors caused restarts: %v", r)
	}
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestGarbageAnswers(t *testing.T) {
	e := newEnv(t)
	m := e.manager(t, e.options())
	l := mustLocker(t, m, "mem", "")
	c, err := m.Check("mem")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		call func(ctx context.Context) error
		want string
	}{
		{"negative slots", func(ctx context.Context) error { _, err := l.Status(ctx, "garbage-slots"); return err }, "slots: negative count -3"},
		{"state of another group", func(ctx context.Context) error { _, err := l.Status(ctx, "garbage-group"); return err }, `state is for group "someone-else"`},
		{"duplicate holder", func(ctx context.Context) error { _, err := l.Status(ctx, "garbage-holders"); return err }, `holder "a" listed twice`},
		{"grant without holder", func(ctx context.Context) error {
			_, err := l.Acquire(ctx, plugins.AcquireRequest{Group: "garbage-grant", Slots: 1, Holder: plugins.Holder{ID: "n1"}})
			return err
		}, `granted=true but holder "n1" listed=false`},
		{"wait without change", func(ctx context.Context) error { _, err := l.Wait(ctx, "garbage-wait", 7); return err }, "unchanged revision 7"},
		{"invalid outcome", func(ctx context.Context) error {
			_, err := c.Check(ctx, plugins.CheckRequest{Name: "garbage", Phase: plugins.PhasePreReboot})
			return err
		}, "invalid outcome OUTCOME_UNSPECIFIED"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call(ctxTimeout(t, 30*time.Second))
			if !errors.Is(err, ErrBadAnswer) || !errors.Is(err, plugins.ErrBadAnswer) {
				t.Fatalf("got %v, want ErrBadAnswer", err)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), `plugin "mem"`) {
				t.Fatalf("message %q lacks %q", err, tc.want)
			}
		})
	}
}

func TestCrashRestartsWithBackoff(t *testing.T) {
	e := newEnv(t)
	m := e.manager(t, e.options())
	l := mustLocker(t, m, "mem", "")
	ctx := ctxTimeout(t, 60*time.Second)
	status := func(group string) error {
		_, err := l.Status(ctx, group)
		return err
	}
	expectDown := func(err error, want string) {
		t.Helper()
		if !errors.Is(err, ErrPluginDown) || !strings.Contains(err.Error(), want) {
			t.Fatalf("got %v, want ErrPluginDown with %q", err, want)
		}
	}

	// Killed in the middle of a call.
	expectDown(status("crash"), "Locker.Status: plugin down: process died or connection lost")
	pids := e.pids()
	if len(pids) != 1 {
		t.Fatalf("processes %v", pids)
	}
	waitGone(t, pids[0])
	// Down during the backoff: no new process.
	expectDown(status("g"), "not restarting for another 1s (failure 1)")
	if n := len(e.pids()); n != 1 {
		t.Fatalf("started a process during backoff (%d)", n)
	}
	e.clock.Advance(time.Second)
	// Restarted, crashes again at once: the backoff doubles.
	expectDown(status("crash"), "process died")
	expectDown(status("g"), "not restarting for another 2s (failure 2)")
	e.clock.Advance(time.Second)
	expectDown(status("g"), "not restarting for another 1s (failure 2)")
	e.clock.Advance(time.Second)
	expectDown(status("crash"), "process died")
	e.clock.Advance(3 * time.Second)
	expectDown(status("g"), "not restarting for another 1s (failure 3)")
	e.clock.Advance(time.Second)
	expectDown(status("crash"), "process died")
	// Capped at Backoff.Max.
	expectDown(status("g"), "not restarting for another 4s (failure 4)")
	e.clock.Advance(4 * time.Second)
	if err := status("g"); err != nil {
		t.Fatalf("after the backoff: %v", err)
	}
	if got := m.Restarts()["mem"]; got != 4 {
		t.Fatalf("Restarts = %d, want 4", got)
	}
	// A successful call resets the backoff.
	expectDown(status("crash"), "process died")
	expectDown(status("g"), "not restarting for another 1s (failure 1)")
	pids = e.pids()
	if len(pids) != 5 {
		t.Fatalf("processes %v, want 5", pids)
	}
	for _, pid := range pids {
		waitGone(t, pid)
	}
}

func TestExternallyKilledPluginIsRestarted(t *testing.T) {
	e := newEnv(t)
	m := e.manager(t, e.options())
	c, err := m.Check("mem")
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxTimeout(t, 60*time.Second)
	req := plugins.CheckRequest{Name: "x", Phase: plugins.PhasePreReboot}
	if _, err := c.Check(ctx, req); err != nil {
		t.Fatal(err)
	}
	pid := e.pids()[0]
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitGone(t, pid)
	if _, err := c.Check(ctx, req); !errors.Is(err, ErrPluginDown) {
		t.Fatalf("check on a dead plugin: %v, want ErrPluginDown", err)
	}
	e.clock.Advance(time.Second)
	res, err := c.Check(ctx, req)
	if err != nil || res.Outcome != plugins.Pass {
		t.Fatalf("after restart: %+v, %v", res, err)
	}
	if got := m.Restarts()["mem"]; got != 1 {
		t.Fatalf("Restarts = %d, want 1", got)
	}
}

func TestHangPastDeadline(t *testing.T) {
	e := newEnv(t)
	opts := e.options()
	opts.CallTimeout = 300 * time.Millisecond
	m := e.manager(t, opts)
	l := mustLocker(t, m, "mem", "")
	// Start it first: starting may itself take longer than these deadlines.
	if _, err := l.Status(ctxTimeout(t, 30*time.Second), "g"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		ctx  func() context.Context
	}{
		{"caller deadline", func() context.Context { return ctxTimeout(t, 300*time.Millisecond) }},
		{"default deadline", context.Background},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := l.Status(tc.ctx(), "hang")
			if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("got %v, want ErrTimeout", err)
			}
			if !strings.Contains(err.Error(), `plugin "mem" (locker): Locker.Status: plugin did not answer in time`) {
				t.Fatalf("message %q", err)
			}
		})
	}
	// The plugin still answers other calls; a slow call is not a crash.
	if _, err := l.Status(ctxTimeout(t, 30*time.Second), "g"); err != nil {
		t.Fatal(err)
	}
	if r := m.Restarts(); len(r) != 0 {
		t.Fatalf("restarts %v", r)
	}
	// The cleanup asserts that Close ends the process despite its hung
	// handlers.
}

func TestStartFailures(t *testing.T) {
	for _, tc := range []struct {
		name    string
		plugin  string
		kind    plugins.Kind
		want    error
		message string
	}{
		{"wrong protocol version", "proto2", plugins.KindLocker, ErrHandshake, "speaks plugin protocol version 2, offpeak speaks version 1"},
		{"stdout before handshake", "noisy", plugins.KindLocker, ErrHandshake, `wrote "hello from a plugin that talks too much" to stdout instead of the handshake`},
		{"exits before handshake", "exit", plugins.KindCheck, ErrHandshake, "before the handshake"},
		{"serves another kind", "checkonly", plugins.KindLocker, ErrWrongKind, "serves [check], not a locker"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			m := e.manager(t, e.options())
			ctx := ctxTimeout(t, 30*time.Second)
			var err error
			if tc.kind == plugins.KindLocker {
				_, err = mustLocker(t, m, tc.plugin, "").Status(ctx, "g")
			} else {
				var c plugins.HealthCheck
				if c, err = m.Check(tc.plugin); err != nil {
					t.Fatal(err)
				}
				_, err = c.Check(ctx, plugins.CheckRequest{Name: "x", Phase: plugins.PhasePreReboot})
			}
			if !errors.Is(err, tc.want) || !errors.Is(err, ErrPluginDown) {
				t.Fatalf("got %v, want %v and ErrPluginDown", err, tc.want)
			}
			prefix := `plugin "` + tc.plugin + `" (` + string(tc.kind) + `): plugin down: `
			if !strings.HasPrefix(err.Error(), prefix) || !strings.Contains(err.Error(), tc.message) {
				t.Fatalf("message %q, want prefix %q and %q", err, prefix, tc.message)
			}
			pids := e.pids()
			if len(pids) != 1 {
				t.Fatalf("processes %v, want exactly one attempt", pids)
			}
			waitGone(t, pids[0])
			// Backoff: the next call does not try again at once.
			if tc.kind == plugins.KindLocker {
				_, err = mustLocker(t, m, tc.plugin, "").Status(ctx, "g")
				if !errors.Is(err, ErrPluginDown) || !errors.Is(err, tc.want) || !strings.Contains(err.Error(), "not restarting for another 1s") {
					t.Fatalf("second call: %v", err)
				}
				if len(e.pids()) != 1 {
					t.Fatal("restarted during backoff")
				}
			}
		})
	}
}

func TestPinnedChecksum(t *testing.T) {
	e := newEnv(t)
	pinned := filepath.Join(e.dir, BinaryPrefix+"pinned")
	copyFile(t, testPlugin, pinned, nil)
	good := sha256Hex(t, pinned)
	for _, tc := range []struct {
		name, pin string
		wantErr   error
	}{
		{"matching pin", good, nil},
		{"matching pin in upper case", strings.ToUpper(good), nil},
		{"other pin", strings.Repeat("ab", 32), ErrChecksumMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := e.options()
			opts.Pins = map[string]string{"pinned": tc.pin}
			m := e.manager(t, opts)
			_, err := mustLocker(t, m, "pinned", "").Status(ctxTimeout(t, 30*time.Second), "g")
			if tc.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, tc.wantErr) || !errors.Is(err, ErrPluginDown) {
				t.Fatalf("got %v, want %v", err, tc.wantErr)
			}
			for _, want := range []string{`plugin "pinned"`, good, strings.ToLower(tc.pin), pinned} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("message %q lacks %q", err, want)
				}
			}
		})
	}
	t.Run("malformed pin", func(t *testing.T) {
		opts := e.options()
		opts.Pins = map[string]string{"pinned": "abc"}
		_, err := e.manager(t, opts).Locker("pinned", nil)
		if err == nil || !strings.Contains(err.Error(), `pin for plugin "pinned" is not a SHA-256`) {
			t.Fatalf("got %v", err)
		}
	})
}

func TestBinaryReplacedWithWrongChecksum(t *testing.T) {
	e := newEnv(t)
	pinned := filepath.Join(e.dir, BinaryPrefix+"pinned")
	copyFile(t, testPlugin, pinned, nil)
	good := sha256Hex(t, pinned)
	opts := e.options()
	opts.Pins = map[string]string{"pinned": good}
	m := e.manager(t, opts)
	l := mustLocker(t, m, "pinned", "")
	ctx := ctxTimeout(t, 30*time.Second)
	if _, err := l.Status(ctx, "g"); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Status(ctx, "crash"); !errors.Is(err, ErrPluginDown) {
		t.Fatalf("crash: %v", err)
	}
	// Replace the file (new inode, as a package manager would).
	tmp := pinned + ".new"
	copyFile(t, testPlugin, tmp, []byte("tampered"))
	if err := os.Rename(tmp, pinned); err != nil {
		t.Fatal(err)
	}
	bad := sha256Hex(t, pinned)
	e.clock.Advance(time.Second)
	_, err := l.Status(ctx, "g")
	if !errors.Is(err, ErrChecksumMismatch) || !errors.Is(err, ErrPluginDown) {
		t.Fatalf("got %v, want ErrChecksumMismatch", err)
	}
	for _, want := range []string{`plugin "pinned" (locker)`, "has sha256 " + bad, "pinned " + good} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message %q lacks %q", err, want)
		}
	}
	if n := len(e.pids()); n != 1 {
		t.Fatalf("the replaced binary was run (%d processes)", n)
	}
}

func TestResolve(t *testing.T) {
	e := newEnv(t)
	later := t.TempDir()
	if err := os.Symlink(testPlugin, filepath.Join(later, BinaryPrefix+"mem")); err != nil {
		t.Fatal(err)
	}
	// Not executable: ignored.
	if err := os.WriteFile(filepath.Join(later, BinaryPrefix+"notexec"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	// An installed binary that would fail; the built-in of that name wins.
	if err := os.WriteFile(filepath.Join(later, BinaryPrefix+"etcd"), []byte("not a program"), 0o755); err != nil {
		t.Fatal(err)
	}
	opts := e.options()
	opts.Dirs = []string{e.dir, filepath.Join(t.TempDir(), "missing"), later}
	opts.Exe = testPlugin
	opts.Builtins = map[plugins.Kind][]string{plugins.KindLocker: {"file", "etcd"}, plugins.KindCheck: {"http"}}
	m := e.manager(t, opts)

	for _, tc := range []struct {
		kind     plugins.Kind
		name     string
		wantPath string
		wantArgs []string
		wantErr  string
	}{
		{plugins.KindLocker, "mem", filepath.Join(later, BinaryPrefix+"mem"), nil, ""},
		{plugins.KindLocker, "etcd", testPlugin, []string{"plugin", "serve", "locker", "etcd"}, ""},
		{plugins.KindCheck, "http", testPlugin, []string{"plugin", "serve", "check", "http"}, ""},
		{plugins.KindCheck, "etcd", filepath.Join(later, BinaryPrefix+"etcd"), nil, ""},
		{plugins.KindLocker, "notexec", "", nil, `no locker plugin named "notexec" (built-in lockers: etcd, file; installed in`},
		{plugins.KindCheck, "nope", "", nil, "built-in checks: http; installed in " + strings.Join(opts.Dirs, ", ") + ": checkonly, etcd, exit, mem, noisy, proto2)"},
	} {
		t.Run(string(tc.kind)+"/"+tc.name, func(t *testing.T) {
			tgt, err := m.resolve(tc.kind, tc.name)
			if tc.wantErr != "" {
				if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got %v, want ErrNotFound with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tgt.path != tc.wantPath || strings.Join(tgt.args, " ") != strings.Join(tc.wantArgs, " ") {
				t.Fatalf("resolved to %s %v, want %s %v", tgt.path, tgt.args, tc.wantPath, tc.wantArgs)
			}
		})
	}

	// The built-in is really served by re-executing Exe.
	l := mustLocker(t, m, "etcd", "")
	res, err := l.Acquire(ctxTimeout(t, 30*time.Second), plugins.AcquireRequest{Group: "g", Slots: 1, Holder: plugins.Holder{ID: "n1"}})
	if err != nil || !res.Granted {
		t.Fatalf("built-in locker: %+v, %v", res, err)
	}
}

func TestList(t *testing.T) {
	e := newEnv(t)
	opts := e.options()
	opts.Exe = testPlugin
	opts.Builtins = map[plugins.Kind][]string{plugins.KindLocker: {"file", "checkonly"}, plugins.KindCheck: {"file", "http"}}
	later := t.TempDir()
	for _, name := range []string{"mem", "file"} {
		if err := os.Symlink(testPlugin, filepath.Join(later, BinaryPrefix+name)); err != nil {
			t.Fatal(err)
		}
	}
	opts.Dirs = append(opts.Dirs, later)
	opts.Pins = map[string]string{"checkonly": strings.Repeat("00", 32)}
	m := e.manager(t, opts)
	list, err := m.List(ctxTimeout(t, 60*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256Hex(t, testPlugin)
	got := map[string]PluginInfo{}
	for _, p := range list {
		if p.Builtin && p.Name == "checkonly" {
			got["builtin:checkonly"] = p
			continue
		}
		if p.ShadowedBy != "" {
			got["shadowed:"+p.Name] = p
			continue
		}
		got[p.Name] = p
	}
	check := func(name string, ok func(p PluginInfo) bool) {
		t.Helper()
		p, found := got[name]
		if !found || !ok(p) {
			t.Errorf("%s: %+v", name, p)
		}
	}
	check("file", func(p PluginInfo) bool {
		return p.Builtin && p.Answered && len(p.Kinds) == 2 && p.Path == testPlugin && p.SHA256 == sum && p.ProtocolVersion == 1 && p.Version == "builtin-test"
	})
	check("http", func(p PluginInfo) bool {
		return p.Builtin && p.Answered && len(p.Kinds) == 1 && p.Kinds[0] == plugins.KindCheck
	})
	check("mem", func(p PluginInfo) bool {
		return !p.Builtin && p.Answered && p.Path == filepath.Join(later, BinaryPrefix+"mem") && p.SHA256 == sum &&
			len(p.Kinds) == 2 && p.Version == "1.2.3" && p.ProtocolVersion == 1
	})
	// Serves a locker and a check, both built-in under this name.
	check("shadowed:file", func(p PluginInfo) bool {
		return !p.Builtin && p.Answered && p.ShadowedBy == "built-in" && p.Path == filepath.Join(later, BinaryPrefix+"file")
	})
	check("shadowed:mem", func(p PluginInfo) bool {
		return p.Path == filepath.Join(e.dir, BinaryPrefix+"mem") && p.ShadowedBy == filepath.Join(later, BinaryPrefix+"mem") && !p.Answered
	})
	check("noisy", func(p PluginInfo) bool { return !p.Answered && strings.Contains(p.Error, "stdout") })
	check("proto2", func(p PluginInfo) bool { return !p.Answered && strings.Contains(p.Error, "protocol version 2") })
	check("checkonly", func(p PluginInfo) bool {
		return !p.Answered && p.Pinned && strings.Contains(p.Error, "checksum mismatch")
	})
	// Every probed process has already been stopped.
	for _, pid := range e.pids() {
		waitGone(t, pid)
	}
}

func TestCloseStopsPluginsAndHandles(t *testing.T) {
	e := newEnv(t)
	m := New(e.options())
	l := mustLocker(t, m, "mem", "")
	c, err := m.Check("mem")
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxTimeout(t, 30*time.Second)
	if _, err := l.Status(ctx, "g"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Check(ctx, plugins.CheckRequest{Name: "x", Phase: plugins.PhasePreReboot}); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	for _, pid := range e.pids() {
		waitGone(t, pid)
	}
	if _, err := l.Status(ctx, "g"); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v, want ErrClosed", err)
	}
	if _, err := m.Check("mem"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Check after Close: %v, want ErrClosed", err)
	}
	if len(e.pids()) != 2 {
		t.Fatal("a process was started after Close")
	}
}

func TestPluginDiesWithItsHost(t *testing.T) {
	e := newEnv(t)
	if err := os.Mkdir(filepath.Join(e.dir, "pids"), 0o755); err != nil {
		t.Fatal(err)
	}
	e.pidDir = filepath.Join(e.dir, "pids")
	host := exec.Command(os.Args[0], "-test.run=^$")
	host.Env = append(os.Environ(), envHostDir+"="+e.dir)
	out, err := host.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := host.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = host.Process.Kill(); _ = host.Wait() })
	if line := readLine(t, out); line != "ready" {
		t.Fatalf("host helper: %q", line)
	}
	pids := e.pids()
	if len(pids) != 1 || !alive(pids[0]) {
		t.Fatalf("plugin processes %v", pids)
	}
	if err := host.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = host.Wait()
	waitGone(t, pids[0])
}

// recordHandler sends every record to a channel, for asserting on logs.
type recordHandler struct {
	attrs []slog.Attr
	ch    chan slog.Record
}

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	r = r.Clone()
	r.AddAttrs(h.attrs...)
	select {
	case h.ch <- r:
	default: // never block a plugin's log pipe
	}
	return nil
}
func (h *recordHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &recordHandler{attrs: append(append([]slog.Attr{}, h.attrs...), as...), ch: h.ch}
}
func (h *recordHandler) WithGroup(string) slog.Handler { return h }

func TestPluginLogsReachSlog(t *testing.T) {
	e := newEnv(t)
	opts := e.options()
	rh := &recordHandler{ch: make(chan slog.Record, 1000)}
	opts.Logger = slog.New(rh)
	m := e.manager(t, opts)
	if _, err := mustLocker(t, m, "mem", "").Status(ctxTimeout(t, 30*time.Second), "log"); err != nil {
		t.Fatal(err)
	}
	want := map[string]slog.Level{"status asked": slog.LevelWarn, "raw line on stderr": slog.LevelInfo}
	timeout := time.After(30 * time.Second)
	for len(want) > 0 {
		select {
		case r := <-rh.ch:
			lv, ok := want[r.Message]
			if !ok {
				continue
			}
			attrs := map[string]string{}
			r.Attrs(func(a slog.Attr) bool { attrs[a.Key] = a.Value.String(); return true })
			if r.Level != lv || attrs["plugin"] != "mem" {
				t.Errorf("record %q: level %s, attrs %v", r.Message, r.Level, attrs)
			}
			if r.Message == "status asked" && attrs["group"] != "log" {
				t.Errorf("plugin attribute lost: %v", attrs)
			}
			delete(want, r.Message)
		case <-timeout:
			t.Fatalf("log records never arrived: %v", want)
		}
	}
}
