package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/offpeak/offpeak/internal/docgen"
	"github.com/offpeak/offpeak/internal/statefile"
	"github.com/offpeak/offpeak/scheduler"
)

func TestSystemdTimerCommand(t *testing.T) {
	root := t.TempDir()
	tests := []struct {
		name     string
		args     []string
		code     int
		contains []string
		stderr   string
	}{
		{"example policy", []string{"--policy", "../../examples/weeknights.toml", "--randomized-delay", "10m", "--every", "15m"}, 0,
			[]string{"OnCalendar=Mon..Fri *-*-* 02:00:00 Europe/Berlin\n", "OnCalendar=Mon..Fri *-*-* 02..04:00/15:00 Europe/Berlin\n",
				"OnCalendar=Sun *-*-* 06:00:00 Europe/Berlin\n", "RandomizedDelaySec=10min\n", "Persistent=true\n", "Unit=offpeak-check.service\n"}, ""},
		{"window starts only", []string{"--every", "0", "--randomized-delay", "0"}, 0,
			[]string{"OnCalendar=*-*-* 02:00:00 UTC\n"}, ""},
		{"bad re-run period", []string{"--every", "90s"}, 1, nil, "cannot write a timer for this policy: the re-run period must be whole minutes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, code := run(t, &App{Root: root}, append([]string{"systemd", "timer"}, tt.args...)...)
			if code != tt.code {
				t.Fatalf("exit %d, want %d; stderr %q", code, tt.code, errOut)
			}
			for _, c := range tt.contains {
				if !strings.Contains(out, c) {
					t.Errorf("timer lacks %q:\n%s", c, out)
				}
			}
			if tt.stderr != "" && !strings.Contains(errOut, tt.stderr) {
				t.Errorf("stderr %q lacks %q", errOut, tt.stderr)
			}
			if tt.name == "window starts only" && (strings.Count(out, "OnCalendar=") != 1 || strings.Contains(out, "RandomizedDelaySec")) {
				t.Errorf("unexpected lines:\n%s", out)
			}
		})
	}
}

// unitFiles are the shipped units the verify test covers.
func unitFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	for _, pattern := range []string{"../../contrib/systemd/*.service", "../../contrib/systemd/*.timer", "../../contrib/fleetlock/*.service"} {
		m, err := filepath.Glob(pattern)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	if len(files) < 5 {
		t.Fatalf("expected the shipped units, found %v", files)
	}
	return files
}

// Every shipped unit, and a timer generated from an example policy, passes
// `systemd-analyze verify`: syntax, known directives, executables and the
// man pages named in Documentation= (generated as make install does).
func TestSystemdAnalyzeVerifiesUnits(t *testing.T) {
	bin, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed (Debian: apt-get install systemd)")
	}
	dir := t.TempDir()
	man := filepath.Join(t.TempDir(), "man")
	if err := docgen.Write((&App{Root: t.TempDir()}).NewRootCmd(), "man", filepath.Join(man, "man1")); err != nil {
		t.Fatal(err)
	}
	// verify insists the executables exist: point them at this test binary,
	// which doubles as offpeak.
	exe, err := filepath.Abs(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range unitFiles(t) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, filepath.Base(f))
		writeFile(t, filepath.Join(dir, filepath.Base(f)), strings.ReplaceAll(string(b), "/usr/bin/offpeak", exe))
	}
	gen, errOut, code := run(t, &App{Root: t.TempDir()}, "systemd", "timer", "--policy", "../../examples/weeknights.toml", "--unit", "offpeak-check.service")
	if code != 0 {
		t.Fatalf("systemd timer: %s", errOut)
	}
	writeFile(t, filepath.Join(dir, "offpeak-weeknights.timer"), gen)
	names = append(names, "offpeak-weeknights.timer")

	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			cmd := exec.Command(bin, "verify", "--man=yes", name)
			cmd.Dir = dir
			cmd.Env = append(os.Environ(), "MANPATH="+man, "SYSTEMD_LOG_COLOR=0")
			out, err := cmd.CombinedOutput()
			var problems []string
			for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				if line == "" {
					continue
				}
				// Lines about the host's own units (dependencies such as
				// dbus.service) are not ours to fix.
				if mentionsAny(line, names) || strings.Contains(line, dir) || !strings.Contains(line, ".service") && !strings.Contains(line, ".timer") {
					problems = append(problems, line)
				} else {
					t.Logf("host unit: %s", line)
				}
			}
			if err != nil || len(problems) > 0 {
				t.Fatalf("systemd-analyze verify %s: %v\n%s", name, err, strings.Join(problems, "\n"))
			}
		})
	}
}

func mentionsAny(s string, names []string) bool {
	for _, n := range names {
		if strings.Contains(s, n) {
			return true
		}
	}
	return false
}

// gateNode is a host root prepared for the post-boot gate.
func gateNode(t *testing.T, checkArgv ...string) (root, policyPath string) {
	t.Helper()
	root = t.TempDir()
	writeFile(t, filepath.Join(root, "etc/machine-id"), "node-a\n")
	writeFile(t, filepath.Join(root, "proc/sys/kernel/random/boot_id"), "boot-1\n")
	pol := "strategy = \"reboot\"\n[post_boot]\ngrace = \"0s\"\n"
	if len(checkArgv) > 0 {
		pol += execCheck("api", "post-boot", "10s", checkArgv...)
	}
	return root, writeFile(t, filepath.Join(root, "policy.toml"), pol)
}

func saveState(t *testing.T, root string, st scheduler.State) {
	t.Helper()
	if err := (statefile.File{Path: filepath.Join(root, "var/lib/offpeak/state.json")}).Save(st); err != nil {
		t.Fatal(err)
	}
}

func loadState(t *testing.T, root string) scheduler.State {
	t.Helper()
	var st scheduler.State
	if err := (statefile.File{Path: filepath.Join(root, "var/lib/offpeak/state.json")}).Load(&st); err != nil {
		t.Fatal(err)
	}
	return st
}

// Without an agent (timer mode) the gate runs the post-boot phase itself.
func TestPostBootGateRunsThePostBootPhase(t *testing.T) {
	rebooted := scheduler.State{Phase: scheduler.PhaseRebooting, RebootFromBootID: "boot-0", RebootRequestedAt: time.Now().Add(-time.Minute)}
	tests := []struct {
		name      string
		state     *scheduler.State
		argv      []string
		code      int
		stdout    string
		wantPhase scheduler.Phase
	}{
		{"first boot ever", nil, nil, 0, "post-boot verdict: good (phase idle)", ""},
		{"ordinary boot", &scheduler.State{Phase: scheduler.PhaseIdle}, nil, 0, "good (phase idle)", scheduler.PhaseIdle},
		{"reboot asked for, not happened", &scheduler.State{Phase: scheduler.PhaseRebooting, RebootFromBootID: "boot-1"}, nil, 0, "good (phase rebooting)", scheduler.PhaseRebooting},
		{"after the reboot, checks pass", &rebooted, []string{"true"}, 0, "good (phase idle)", scheduler.PhaseIdle},
		{"after the reboot, checks fail", &rebooted, []string{"false"}, 1, "", scheduler.PhaseFailed},
		{"an earlier bad boot, rolled back", &scheduler.State{Phase: scheduler.PhaseFailed, RolledBack: true, FailureReason: "check 'api' failed"}, nil, 0, "rolled back", scheduler.PhaseFailed},
		{"an earlier bad boot, not rolled back", &scheduler.State{Phase: scheduler.PhaseFailed, FailureReason: "check 'api' failed"}, nil, 1, "", scheduler.PhaseFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root, pol := gateNode(t, tt.argv...)
			if tt.state != nil {
				saveState(t, root, *tt.state)
			}
			out, errOut, code := run(t, &App{Root: root}, "systemd", "post-boot-gate", "--policy", pol, "--poll", "10ms")
			if code != tt.code {
				t.Fatalf("exit %d, want %d\nstdout %q\nstderr %s", code, tt.code, out, errOut)
			}
			if tt.stdout != "" && !strings.Contains(out, tt.stdout) {
				t.Errorf("stdout %q lacks %q", out, tt.stdout)
			}
			if tt.code != 0 && !strings.Contains(errOut, "bad boot") {
				t.Errorf("stderr %q does not say the boot is bad", errOut)
			}
			if tt.wantPhase != "" {
				if got := loadState(t, root).Phase; got != tt.wantPhase {
					t.Errorf("phase after the gate %s, want %s", got, tt.wantPhase)
				}
			}
		})
	}
}

// With an agent running, the gate only watches the agent's state.
func TestPostBootGateWaitsForTheAgent(t *testing.T) {
	tests := []struct {
		name    string
		verdict scheduler.State
		code    int
	}{
		{"good", scheduler.State{Phase: scheduler.PhaseIdle}, 0},
		{"bad", scheduler.State{Phase: scheduler.PhaseFailed, FailureReason: "check 'api' failed"}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root, pol := gateNode(t)
			saveState(t, root, scheduler.State{Phase: scheduler.PhasePostBoot, RebootFromBootID: "boot-0"})
			agent := &App{Root: root, Logger: newLogger(io.Discard, "error")}
			release, err := agent.tryAgentLock(roleAgent)
			if err != nil {
				t.Fatal(err)
			}
			defer release()

			var stderr, stdout syncBuffer
			gate := &App{Root: root, Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr, Now: time.Now, Exe: os.Args[0]}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			exit := make(chan int, 1)
			go func() {
				exit <- gate.Run(ctx, []string{"systemd", "post-boot-gate", "--policy", pol, "--poll", "10ms"})
			}()
			select {
			case <-stderr.seen("waiting for the agent's verdict"):
			case code := <-exit:
				t.Fatalf("gate exited %d before the verdict: %s", code, stderr.String())
			case <-ctx.Done():
				t.Fatalf("gate never waited: %s", stderr.String())
			}
			// The agent still decides nothing: the gate keeps waiting and
			// leaves the state alone.
			if got := loadState(t, root).Phase; got != scheduler.PhasePostBoot {
				t.Fatalf("gate changed the agent's state to %s", got)
			}
			saveState(t, root, tt.verdict)
			select {
			case code := <-exit:
				if code != tt.code {
					t.Fatalf("exit %d, want %d: %s", code, tt.code, stderr.String())
				}
			case <-ctx.Done():
				t.Fatalf("no verdict: %s", stderr.String())
			}
		})
	}
}

// An agent started while the gate runs the post-boot phase waits for it
// instead of running a pass at the same time.
func TestAgentWaitsForTheGate(t *testing.T) {
	root := t.TempDir()
	gate := &App{Root: root, Logger: newLogger(io.Discard, "error")}
	release, err := gate.tryAgentLock(roleGate)
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	a := &App{Root: root, Logger: newLogger(&logs, "info")}
	got := make(chan error, 1)
	go func() {
		r, err := a.waitAgentLock(context.Background(), 10*time.Millisecond)
		if err == nil {
			r()
		}
		got <- err
	}()
	<-logs.seen("waiting for the agent lock")
	release()
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	// Another agent, by contrast, is an error at once.
	release, err = (&App{Root: root, Logger: newLogger(io.Discard, "error")}).tryAgentLock(roleAgent)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if _, err := a.waitAgentLock(context.Background(), time.Hour); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("another offpeak agent is running (pid %d", os.Getpid())) {
		t.Fatalf("second agent: %v", err)
	}
}

// The example setups in contrib/ are valid: offpeak policies load with
// their locker keys checked, and the Zincati snippet is TOML with the keys
// Zincati reads.
func TestContribExamplesValidate(t *testing.T) {
	for _, f := range []string{"../../contrib/etcd/policy.d/50-etcd.toml", "../../contrib/fleetlock/fleetlock.toml", "../../contrib/fleetlock/offpeak-node.toml"} {
		t.Run(filepath.Base(f), func(t *testing.T) {
			out, errOut, code := run(t, &App{Root: t.TempDir()}, "policy", "validate", "--policy", f)
			if code != 0 {
				t.Fatalf("exit %d: %s%s", code, out, errOut)
			}
		})
	}
	t.Run("zincati", func(t *testing.T) {
		var z struct {
			Identity struct{ Group string }
			Updates  struct {
				Strategy  string
				FleetLock struct {
					BaseURL string `toml:"base_url"`
				} `toml:"fleet_lock"`
			}
		}
		md, err := toml.DecodeFile("../../contrib/fleetlock/zincati/55-updates-strategy.toml", &z)
		if err != nil {
			t.Fatal(err)
		}
		if len(md.Undecoded()) > 0 || z.Updates.Strategy != "fleet_lock" || !strings.HasPrefix(z.Updates.FleetLock.BaseURL, "https://") || z.Identity.Group == "" {
			t.Fatalf("zincati snippet: %+v, unknown keys %v", z, md.Undecoded())
		}
	})
}

func TestCheckLockedOutByTheAgent(t *testing.T) {
	root := t.TempDir()
	quiet := func() *App { return &App{Root: root, Logger: newLogger(io.Discard, "error")} }
	release, err := quiet().lockForCheck()
	if err != nil {
		t.Fatalf("free lock: %v", err)
	}
	// An agent waits for a running check, like for the gate.
	if _, err := quiet().tryAgentLock(roleAgent); err == nil {
		t.Fatal("agent lock taken while a check holds it")
	}
	release()
	agentRelease, err := quiet().tryAgentLock(roleAgent)
	if err != nil {
		t.Fatal(err)
	}
	defer agentRelease()
	if _, err := quiet().lockForCheck(); err == nil || !strings.Contains(err.Error(), "another offpeak agent is running") || !strings.Contains(err.Error(), "--dry-run") {
		t.Fatalf("check beside the agent: %v", err)
	}
}
