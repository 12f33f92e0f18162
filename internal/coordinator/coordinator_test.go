package coordinator

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/offpeak/offpeak/scheduler"
)

// lockedBySomeone reports whether another open file description cannot
// take the lock of the file now at path.
func lockedBySomeone(t *testing.T, path string) bool {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if err == nil {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		return false
	}
	if !errors.Is(err, syscall.EWOULDBLOCK) {
		t.Fatal(err)
	}
	return true
}

func TestOpenSetClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", "update-engine", "coordinator.conf")
	c, err := Open(path, "window")
	if err != nil {
		t.Fatal(err)
	}
	check := func(state State) {
		t.Helper()
		kv, err := Read(path)
		if err != nil {
			t.Fatal(err)
		}
		if kv["NAME"] != "offpeak" || kv["STRATEGY"] != "window" || kv["STATE"] != string(state) {
			t.Fatalf("coordinator.conf = %v, want NAME=offpeak STRATEGY=window STATE=%s", kv, state)
		}
		if !lockedBySomeone(t, path) {
			t.Fatalf("coordinator.conf not locked in state %s", state)
		}
		entries, _ := os.ReadDir(filepath.Dir(path))
		if len(entries) != 1 {
			t.Fatalf("leftover files beside coordinator.conf: %v", entries)
		}
	}
	check(Starting)
	for _, s := range []State{Running, RebootPlanned, Running, Rebooting} {
		if err := c.Set(s); err != nil {
			t.Fatal(err)
		}
		check(s)
		if c.State() != s {
			t.Fatalf("State() = %s, want %s", c.State(), s)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if lockedBySomeone(t, path) {
		t.Fatal("lock still held after Close")
	}
	if kv, _ := Read(path); kv["STATE"] != string(Rebooting) {
		t.Fatalf("file not left in place after Close: %v", kv)
	}
	if err := c.Set(Running); err == nil {
		t.Fatal("Set after Close succeeded")
	}
}

func TestSecondCoordinatorRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "coordinator.conf")
	first, err := Open(path, "window")
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	// Also after a replace: the lock moves to the new file.
	if err := first.Set(Running); err != nil {
		t.Fatal(err)
	}
	_, err = Open(path, "reboot")
	if !errors.Is(err, ErrHeld) || !strings.Contains(err.Error(), "NAME=offpeak") {
		t.Fatalf("second Open error = %v, want ErrHeld naming offpeak", err)
	}
	if kv, _ := Read(path); kv["STRATEGY"] != "window" || kv["STATE"] != "running" {
		t.Fatalf("refused coordinator changed the file: %v", kv)
	}
}

// loginBanner mimics how Flatcar's interactive login profile reads the
// file: no file or no lock holder means no coordinator; otherwise it sources
// the file and reports STATE.
const loginBanner = `f="$1"
[ -f "$f" ] || { echo none; exit 0; }
if flock --nonblock --exclusive "$f" true 2>/dev/null; then echo none; exit 0; fi
. "$f"
echo "$NAME $STATE"
`

func TestLoginBannerSeesTheState(t *testing.T) {
	for _, tool := range []string{"flock", "sh"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (Debian: util-linux, dash)", tool)
		}
	}
	banner := func(path string) string {
		t.Helper()
		out, err := exec.Command("sh", "-c", loginBanner, "banner", path).CombinedOutput()
		if err != nil {
			t.Fatalf("banner: %v: %s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	path := filepath.Join(t.TempDir(), "coordinator.conf")
	if got := banner(path); got != "none" {
		t.Fatalf("before the agent: %q", got)
	}
	c, err := Open(path, "window")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		state State
		want  string
	}{
		{Running, "offpeak running"},
		{RebootPlanned, "offpeak reboot-planned"},
		{Rebooting, "offpeak rebooting"},
	}
	for _, tt := range tests {
		t.Run(string(tt.state), func(t *testing.T) {
			if err := c.Set(tt.state); err != nil {
				t.Fatal(err)
			}
			if got := banner(path); got != tt.want {
				t.Fatalf("banner %q, want %q", got, tt.want)
			}
		})
	}
	c.Close()
	if got := banner(path); got != "none" {
		t.Fatalf("after the agent stopped: %q", got)
	}
}

func TestStateFor(t *testing.T) {
	staged := &scheduler.StagedInfo{State: "yes", Version: "4152.2.1"}
	tests := []struct {
		name string
		r    scheduler.Result
		want State
	}{
		{"idle", scheduler.Result{Decision: scheduler.DecisionIdle, Phase: scheduler.PhaseIdle, Staged: &scheduler.StagedInfo{State: "no"}}, Running},
		{"staged, outside the window", scheduler.Result{Decision: scheduler.DecisionWaitWindow, Phase: scheduler.PhaseIdle, Staged: staged}, RebootPlanned},
		{"staged, waiting for a slot", scheduler.Result{Decision: scheduler.DecisionWaitSlot, Phase: scheduler.PhaseAcquiring, Staged: staged}, RebootPlanned},
		{"staged, checks failing", scheduler.Result{Decision: scheduler.DecisionWaitHealth, Phase: scheduler.PhaseIdle, Staged: staged}, RebootPlanned},
		{"staged, strategy off", scheduler.Result{Decision: scheduler.DecisionBlocked, Phase: scheduler.PhaseIdle, Staged: staged}, Running},
		{"rebooting", scheduler.Result{Decision: scheduler.DecisionReboot, Phase: scheduler.PhaseRebooting, Staged: staged}, Rebooting},
		{"waiting for the reboot", scheduler.Result{Decision: scheduler.DecisionReboot, Phase: scheduler.PhaseRebooting}, Rebooting},
		{"dry run would reboot", scheduler.Result{Decision: scheduler.DecisionReboot, Phase: scheduler.PhaseIdle, DryRun: true, Staged: staged}, RebootPlanned},
		{"post-boot", scheduler.Result{Decision: scheduler.DecisionPostBoot, Phase: scheduler.PhasePostBoot}, Running},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := StateFor(tt.r); got != tt.want {
				t.Fatalf("StateFor = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestObserveWritesTheMappedState(t *testing.T) {
	path := filepath.Join(t.TempDir(), "coordinator.conf")
	c, err := Open(path, "window")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Observe(scheduler.Result{Decision: scheduler.DecisionReboot, Phase: scheduler.PhaseRebooting, Strategy: "window"})
	if kv, _ := Read(path); kv["STATE"] != "rebooting" || kv["STRATEGY"] != "window" {
		t.Fatalf("after a reboot decision: %v", kv)
	}
	// A reload to another strategy shows in the next decision.
	c.Observe(scheduler.Result{Decision: scheduler.DecisionIdle, Phase: scheduler.PhaseIdle, Strategy: "etcd-lock"})
	if kv, _ := Read(path); kv["STATE"] != "running" || kv["STRATEGY"] != "etcd-lock" {
		t.Fatalf("after a reload: %v", kv)
	}
}

// The holder may replace the file between another process opening it and
// locking it. The lock of the replaced file guards nothing, so Open must
// go on to the file now at path: still held means ErrHeld, released means
// the new coordinator takes over.
func TestOpenDoesNotTrustTheLockOfAReplacedFile(t *testing.T) {
	for _, tt := range []struct {
		name        string
		holderExits bool
	}{
		{"holder still running", false},
		{"holder exits right after replacing", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "coordinator.conf")
			first, err := Open(path, "window")
			if err != nil {
				t.Fatal(err)
			}
			defer first.Close()
			replaced := false
			testHookOpened = func() {
				if replaced {
					return
				}
				replaced = true
				if err := first.Set(Running); err != nil {
					t.Error(err)
				}
				if tt.holderExits {
					first.Close()
				}
			}
			t.Cleanup(func() { testHookOpened = nil })

			second, err := Open(path, "reboot")
			if !replaced {
				t.Fatal("the file was not replaced during Open")
			}
			if !tt.holderExits {
				if !errors.Is(err, ErrHeld) {
					t.Fatalf("second Open error = %v, want ErrHeld", err)
				}
				if kv, _ := Read(path); kv["STRATEGY"] != "window" || kv["STATE"] != "running" {
					t.Fatalf("refused coordinator changed the file: %v", kv)
				}
				if !lockedBySomeone(t, path) {
					t.Fatal("file at path not locked by the first coordinator")
				}
				return
			}
			if err != nil {
				t.Fatalf("second Open after the holder exited: %v", err)
			}
			defer second.Close()
			if kv, _ := Read(path); kv["STRATEGY"] != "reboot" || kv["STATE"] != "starting" || !lockedBySomeone(t, path) {
				t.Fatalf("new coordinator's file %v, locked=%v", kv, lockedBySomeone(t, path))
			}
		})
	}
}
