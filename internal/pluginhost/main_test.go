package pluginhost

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/offpeak/offpeak/plugins"
)

// testPlugin is the testdata/testplugin binary, built once in TestMain.
var testPlugin string

// envHostDir makes the test binary act as a plugin host (see runHost).
const envHostDir = "PLUGINHOST_TEST_HOST_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(envHostDir); dir != "" {
		runHost(dir)
		return
	}
	os.Exit(buildAndRun(m))
}

func buildAndRun(m *testing.M) int {
	// Plugin files and directories must not be group-writable (discovery
	// refuses those) whatever the caller's umask.
	syscall.Umask(0o022)
	tmp, err := os.MkdirTemp("", "pluginhost-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	testPlugin = filepath.Join(tmp, "testplugin")
	cmd := exec.Command("go", "build", "-o", testPlugin, "./testdata/testplugin")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the test plugin:", err)
		return 1
	}
	return m.Run()
}

// runHost is a plugin host in its own process: it starts the "mem" plugin
// from dir, says "ready" and waits to be killed.
func runHost(dir string) {
	m := New(Options{Dirs: []string{dir}, Env: []string{"TESTPLUGIN_PIDDIR=" + filepath.Join(dir, "pids")}})
	l, err := m.Locker("mem", nil)
	if err == nil {
		_, err = l.Status(context.Background(), "g")
	}
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("ready")
	select {}
}

// fakeClock is the injected time source for backoff decisions.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 3, 1, 2, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// env is one test's plugin directory, pid directory and clock.
type env struct {
	t      *testing.T
	dir    string
	pidDir string
	clock  *fakeClock
	logs   *logBuffer
}

// modes are the names the test plugin is installed under (see its main).
var modes = []string{"mem", "noisy", "exit", "checkonly", "proto2"}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir(), pidDir: t.TempDir(), clock: newFakeClock(), logs: &logBuffer{}}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("host log:\n%s", e.logs)
		}
	})
	for _, mode := range modes {
		if err := os.Symlink(testPlugin, filepath.Join(e.dir, BinaryPrefix+mode)); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

func (e *env) options() Options {
	return Options{
		Dirs:    []string{e.dir},
		Env:     []string{"TESTPLUGIN_PIDDIR=" + e.pidDir},
		Logger:  slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now:     e.clock.Now,
		Backoff: Backoff{Min: time.Second, Max: 4 * time.Second},
	}
}

// manager returns a Manager closed, and checked to have left no process
// behind, when the test ends.
func (e *env) manager(t *testing.T, opts Options) *Manager {
	m := New(opts)
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		for _, pid := range e.pids() {
			waitGone(t, pid)
		}
	})
	return m
}

// pids lists every plugin process started in this env so far.
func (e *env) pids() []int {
	e.t.Helper()
	entries, err := os.ReadDir(e.pidDir)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []int
	for _, en := range entries {
		pid, err := strconv.Atoi(en.Name())
		if err != nil {
			e.t.Fatalf("pid file %q", en.Name())
		}
		out = append(out, pid)
	}
	sort.Ints(out)
	return out
}

// alive reports whether pid is a live process (a zombie counts as dead).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return false
	}
	state := b[i+2]
	return state != 'Z' && state != 'X'
}

// waitGone polls /proc until pid has exited; the process is external, so
// polling with a deadline is the only way to observe it.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("plugin process %d still running", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// logBuffer collects log output; a failing test prints it. (Writing to
// t.Log directly would panic if a plugin goroutine logs after the test.)
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func sha256Hex(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func copyFile(t *testing.T, from, to string, extra []byte) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if _, err := dst.Write(extra); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func mustLocker(t *testing.T, m *Manager, name string, config string) plugins.Locker {
	t.Helper()
	var raw []byte
	if config != "" {
		raw = []byte(config)
	}
	l, err := m.Locker(name, raw)
	if err != nil {
		t.Fatalf("Locker(%q): %v", name, err)
	}
	return l
}

// readLine reads one line from r or fails after a deadline.
func readLine(t *testing.T, r io.Reader) string {
	t.Helper()
	ch := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(r).ReadString('\n')
		ch <- strings.TrimSpace(line)
	}()
	select {
	case line := <-ch:
		return line
	case <-time.After(30 * time.Second):
		t.Fatal("no line from the host helper")
		return ""
	}
}
