package simcmd

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/offpeak/offpeak/internal/cli"
)

// envDie makes the companion kill itself, as the OOM killer would.
const envDie = "OFFPEAK_SIMCMD_TEST_DIE"

// Run as offpeak-simulate (through a symlink of that name), the test binary
// is the companion that `offpeak simulate` looks for.
func TestMain(m *testing.M) {
	if filepath.Base(os.Args[0]) == cli.SimulateBinary {
		if os.Getenv(envDie) == "1" {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
		}
		os.Exit(Main(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	// Policies the tests write must not be group-writable (offpeak
	// refuses those) whatever the caller's umask.
	syscall.Umask(0o022)
	os.Exit(m.Run())
}

func runSim(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Main(context.Background(), args, strings.NewReader(""), &out, &errb)
	return out.String(), errb.String(), code
}

type comparison struct {
	Offpeak, Baseline struct {
		Mode       string  `json:"mode"`
		Ratio      float64 `json:"ratio"`
		Violations int     `json:"violations"`
		Complete   bool    `json:"complete"`
	}
}

func checkComparison(t *testing.T, out string) {
	t.Helper()
	var got comparison
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("output is not one JSON object: %v\n%s", err, out)
	}
	if got.Offpeak.Mode != "offpeak" || got.Baseline.Mode != "fleetlock-poll" || !got.Offpeak.Complete || !got.Baseline.Complete {
		t.Fatalf("unexpected comparison: %+v", got)
	}
}

func TestSimulateCommand(t *testing.T) {
	svg := filepath.Join(t.TempDir(), "timeline.svg")
	out, errOut, code := runSim(t, "--policy", "../../../examples/weeknights.toml",
		"--nodes", "12", "--slots", "2", "--locker", "file", "--compare", "fleetlock-poll", "--output", "json", "--svg", svg)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	checkComparison(t, out)
	if b, err := os.ReadFile(svg); err != nil || !strings.HasPrefix(string(b), "<svg") {
		t.Fatalf("svg not written: %v", err)
	}
}

func TestSimulateFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"bad faults", []string{"--faults", "kill=3"}, "--faults"},
		{"bad baseline", []string{"--baseline", "poll"}, "--baseline must be fleetlock-poll"},
		{"baseline and compare", []string{"--baseline", "fleetlock-poll", "--compare", "fleetlock-poll"}, "exclude each other"},
		{"bad from", []string{"--from", "tomorrow"}, "--from"},
		{"bad locker", []string{"--locker", "consul"}, "--locker must be file or etcd"},
		{"stray argument", []string{"extra"}, "unknown command"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"--policy", "../../../examples/weeknights.toml", "--nodes", "2"}, tc.args...)
			_, errOut, code := runSim(t, args...)
			if code != 2 || !strings.Contains(errOut, tc.want) || !strings.HasPrefix(errOut, "offpeak-simulate: ") {
				t.Fatalf("exit %d, stderr %q; want 2 and %q", code, errOut, tc.want)
			}
		})
	}
}

// `offpeak simulate` runs the offpeak-simulate binary found next to offpeak
// with the arguments as given (global flags included) and exits with its
// status.
func TestOffpeakSimulateRunsCompanion(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	if err := os.Symlink(self, filepath.Join(bin, cli.SimulateBinary)); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", t.TempDir()) // only the binary next to offpeak can be found
	policy, err := filepath.Abs("../../../examples/weeknights.toml")
	if err != nil {
		t.Fatal(err)
	}
	// A policy found through --root, which offpeak passes on: its 3 slots
	// show in the report.
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc/offpeak"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "etc/offpeak/policy.toml"), []byte("[lock]\nslots = 3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		args    []string
		code    int
		wantOut string
		wantErr string
		die     bool
	}{
		{"report", []string{"simulate", "--log-level", "warn", "--policy", policy, "--nodes", "6", "--slots", "2",
			"--locker", "file", "--compare", "fleetlock-poll", "--output", "json"}, 0, `"baseline"`, "", false},
		{"global flag before the command", []string{"--root", root, "simulate", "--nodes", "4", "--output", "json"}, 0, `"slots_per_group": 3`, "", false},
		{"help is the companion's", []string{"simulate", "--help"}, 0, "--reboot-jitter", "", false},
		{"its error and status", []string{"simulate", "--policy", policy, "--faults", "kill=3"}, 2, "", "offpeak-simulate: --faults", false},
		{"flag completion", []string{"__complete", "simulate", "--no"}, 0, "--nodes", "", false},
		{"killed by a signal", []string{"simulate", "--nodes", "2"}, 128 + 9, "", "offpeak: offpeak-simulate killed by signal killed", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.die {
				t.Setenv(envDie, "1")
			}
			var out, errb bytes.Buffer
			a := &cli.App{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb, Now: time.Now, Exe: filepath.Join(bin, "offpeak")}
			code := a.Run(context.Background(), tc.args)
			if code != tc.code || !strings.Contains(out.String(), tc.wantOut) || !strings.Contains(errb.String(), tc.wantErr) {
				t.Fatalf("exit %d (want %d)\nstdout %s\nstderr %s", code, tc.code, out.String(), errb.String())
			}
			if tc.code == 0 && tc.name == "report" {
				checkComparison(t, out.String())
			}
			if !tc.die && strings.Contains(errb.String(), "offpeak: ") {
				t.Fatalf("offpeak reported the companion's failure again: %s", errb.String())
			}
		})
	}
}
