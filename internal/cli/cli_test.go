package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/offpeak/offpeak/scheduler"
)

// The test binary doubles as the offpeak binary: the plugin host re-executes
// it to serve built-in plugins, and the kill test runs it as a child.
const envExec = "OFFPEAK_CLI_TEST_EXEC"

func TestMain(m *testing.M) {
	// Policies and plugins the tests write must not be group-writable
	// (offpeak refuses those) whatever the caller's umask.
	syscall.Umask(0o022)
	if os.Getenv(envExec) == "1" {
		app := &App{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Now: time.Now, Exe: os.Args[0]}
		switch os.Getenv("OFFPEAK_CLI_TEST_REBOOTER") {
		case "hang":
			app.Rebooter = hangingRebooter{}
		case "record":
			app.Rebooter = &recordingRebooter{}
		}
		// As cmd/offpeak's main: SIGINT and SIGTERM cancel the command.
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		code := app.Run(ctx, os.Args[1:])
		stop()
		os.Exit(code)
	}
	os.Setenv(envExec, "1")
	os.Exit(m.Run())
}

type hangingRebooter struct{}

func (hangingRebooter) Reboot(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }

type recordingRebooter struct {
	mu    sync.Mutex
	calls int
}

func (r *recordingRebooter) Reboot(context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	return nil
}

// run executes one command line in-process and returns stdout, stderr and
// the exit status.
func run(t *testing.T, app *App, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	app.Stdout, app.Stderr, app.Stdin = &out, &errb, strings.NewReader("")
	app.Exe = os.Args[0]
	app.Logger = nil
	code := app.Run(context.Background(), args)
	return out.String(), errb.String(), code
}

func touch(t *testing.T, path string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, path, content string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestCheckOnBuiltInDefault(t *testing.T) {
	root := t.TempDir()
	touch(t, filepath.Join(root, "run/reboot-required"))
	writeFile(t, filepath.Join(root, "etc/machine-id"), "node-a\n")
	tests := []struct {
		now      string
		decision scheduler.Decision
		next     string
	}{
		{"2025-06-03T02:30:00Z", scheduler.DecisionReboot, "2025-06-03T02:30:00Z"},
		{"2025-06-03T12:00:00Z", scheduler.DecisionWaitWindow, "2025-06-04T02:00:00Z"},
	}
	for _, tt := range tests {
		t.Run(tt.now, func(t *testing.T) {
			out, errOut, code := run(t, &App{Root: root}, "check", "--dry-run", "--now", tt.now, "--output", "json")
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			var r map[string]any
			if err := json.Unmarshal([]byte(out), &r); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			for _, k := range []string{"decision", "reason", "next_window", "holding_slot"} {
				if _, ok := r[k]; !ok {
					t.Fatalf("key %q missing in %s", k, out)
				}
			}
			if r["decision"] != string(tt.decision) || r["next_window"] != tt.next || r["holding_slot"] != false {
				t.Fatalf("got %s", out)
			}
		})
	}
}

func TestCheckIdleWithoutSentinel(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "etc/machine-id"), "node-a\n")
	out, _, code := run(t, &App{Root: root}, "check", "--dry-run", "--now", "2025-06-03T02:30:00Z", "--output", "json")
	if code != 0 || !strings.Contains(out, `"decision": "idle"`) || !strings.Contains(out, "no update staged") {
		t.Fatalf("exit %d: %s", code, out)
	}
}

func TestNextJSON(t *testing.T) {
	out, errOut, code := run(t, &App{}, "next", "--policy", "../../examples/weeknights.toml", "--from", "2025-03-08T00:00:00Z", "--count", "5", "--output", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var ws []map[string]string
	if err := json.Unmarshal([]byte(out), &ws); err != nil || len(ws) != 5 {
		t.Fatalf("%v: %s", err, out)
	}
	if ws[0]["window"] != "sunday" || ws[0]["start"] != "2025-03-09T06:00:00+01:00" || ws[1]["start"] != "2025-03-10T02:00:00+01:00" || ws[1]["end"] != "2025-03-10T05:00:00+01:00" {
		t.Fatalf("got %s", out)
	}
}

func TestPolicyValidate(t *testing.T) {
	dir := t.TempDir()
	good := writeFile(t, filepath.Join(dir, "good.toml"), "strategy = \"off\"\n")
	bad := writeFile(t, filepath.Join(dir, "bad.toml"), "stratgy = \"off\"\n[lock]\nslots = 0\n")
	if out, _, code := run(t, &App{}, "policy", "validate", "--policy", good); code != 0 || !strings.Contains(out, "valid") {
		t.Fatalf("exit %d: %s", code, out)
	}
	out, _, code := run(t, &App{}, "policy", "validate", "--policy", bad)
	if code != 1 {
		t.Fatalf("exit %d", code)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || lines[0] != bad+`:1: stratgy: unknown key; did you mean "strategy"?` || !strings.HasPrefix(lines[1], bad+":3: lock.slots: ") {
		t.Fatalf("got %q", out)
	}
	if out, _, code := run(t, &App{Root: t.TempDir()}, "policy", "show"); code != 0 || !strings.Contains(out, `name = "nightly"`) {
		t.Fatalf("policy show: %d %s", code, out)
	}
}

// TestKilledHolderNamedByStatus: node-a takes the slot and is killed while
// its reboot is pending; its slot stays held and node-b's status names it.
func TestKilledHolderNamedByStatus(t *testing.T) {
	pol := func(id string) string {
		return fmt.Sprintf("strategy = \"etcd-lock\"\n[node]\nid = %q\ngroup = \"web\"\n[lock]\nplugin = \"file\"\n[lock.config]\ndir = \"/shared/locks\"\n", id)
	}
	rootA, rootB := t.TempDir(), t.TempDir()
	for _, r := range []string{rootA, rootB} {
		touch(t, filepath.Join(r, "run/reboot-required"))
	}
	// Both nodes see one lock directory, as on a shared filesystem.
	if err := os.MkdirAll(filepath.Join(rootA, "shared/locks"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(rootA, "shared"), filepath.Join(rootB, "shared")); err != nil {
		t.Fatal(err)
	}
	polA := writeFile(t, filepath.Join(rootA, "policy.toml"), pol("node-a"))
	polB := writeFile(t, filepath.Join(rootB, "policy.toml"), pol("node-b"))

	cmd := exec.Command(os.Args[0], "--root", rootA, "agent", "--policy", polA)
	cmd.Env = append(os.Environ(), envExec+"=1", "OFFPEAK_CLI_TEST_REBOOTER=hang")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); cmd.Wait() })
	// Wait until node-a has persisted "rebooting" (its reboot hangs).
	statePath := filepath.Join(rootA, "var/lib/offpeak/state.json")
	deadline := time.Now().Add(30 * time.Second)
	for {
		var st scheduler.State
		b, err := os.ReadFile(statePath)
		if err == nil && json.Unmarshal(b, &st) == nil && st.Phase == scheduler.PhaseRebooting {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node-a never reached rebooting; stderr:\n%s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	cmd.Wait()

	rb := &recordingRebooter{}
	out, errOut, code := run(t, &App{Root: rootB, Rebooter: rb}, "check", "--policy", polB, "--output", "json")
	if code != 0 || !strings.Contains(out, `"decision": "wait-slot"`) || !strings.Contains(out, "held by node-a") {
		t.Fatalf("exit %d: %s %s", code, out, errOut)
	}
	out, _, code = run(t, &App{Root: rootB}, "status")
	if code != 0 || !strings.Contains(out, "waiting for slot (1/1 held by node-a") {
		t.Fatalf("status: %d %s", code, out)
	}
	if rb.calls != 0 {
		t.Fatal("node-b rebooted without a slot")
	}
	out, _, _ = run(t, &App{Root: rootB}, "status", "--output", "json")
	var st map[string]any
	if err := json.Unmarshal([]byte(out), &st); err != nil || st["decision"] != "wait-slot" {
		t.Fatalf("%v %s", err, out)
	}
}

func TestStatusWithoutState(t *testing.T) {
	_, errOut, code := run(t, &App{Root: t.TempDir()}, "status")
	if code == 0 || !strings.Contains(errOut, "has not run yet") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
}

// Without offpeak-simulate next to offpeak or on $PATH, `offpeak simulate`
// says where it looked and how to build it.
func TestSimulateWithoutCompanion(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	exe := filepath.Join(t.TempDir(), "offpeak")
	var out, errb bytes.Buffer
	a := &App{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb, Now: time.Now, Exe: exe}
	code := a.Run(context.Background(), []string{"simulate", "--nodes", "5"})
	for _, want := range []string{"offpeak-simulate is not installed", "next to " + exe, "go build -o DIR ./cmd/offpeak-simulate"} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("stderr lacks %q: %s", want, errb.String())
		}
	}
	if code != 2 {
		t.Fatalf("exit %d, want 2", code)
	}
}
