package scheduler_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/offpeak/offpeak/internal/pluginhost"
	"github.com/offpeak/offpeak/scheduler"
)

// TestThirdPartyCheckBlocksReboot builds the example maintenance-hold plugin
// from its own module, installs it into a plugin directory, and drives the
// agent: the plugin's check blocks the reboot while the hold file exists and
// allows it after.
func TestThirdPartyCheckBlocksReboot(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a plugin module")
	}
	_, self, _, _ := runtime.Caller(0)
	src := filepath.Join(filepath.Dir(self), "..", "examples", "plugins", "maintenance-hold")
	pluginDir := t.TempDir()
	bin := filepath.Join(pluginDir, "offpeak-plugin-maintenance-hold")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Dir = src
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the example plugin: %v\n%s", err, out)
	}
	// Plugin discovery refuses group-writable files and directories; a
	// umask such as 002 would make them so.
	for _, p := range []string{pluginDir, bin} {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}

	m := pluginhost.New(pluginhost.Options{Dirs: []string{pluginDir}})
	t.Cleanup(func() { m.Close() })

	hold := filepath.Join(t.TempDir(), "maintenance-hold")
	if err := os.WriteFile(hold, []byte("db migration by alice\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	pol := basePolicy + fmt.Sprintf(`
[[health]]
name = "hold"
plugin = "maintenance-hold"
phase = "pre-reboot"
timeout = "20s"
[health.config]
path = %q
`, hold)

	h := newHarness(t, "2025-06-03T02:10:00Z")
	n := &node{id: "node-a", staged: true}
	ag := h.agent(n, pol, func(o *scheduler.Options) {
		o.Checks = func(plugin string) (scheduler.HealthCheck, error) { return m.Check(plugin) }
	})
	r := step(t, ag)
	want(t, r, scheduler.DecisionWaitHealth, "check 'hold' failed")
	if n.rebootCount() != 0 {
		t.Fatal("rebooted while the hold file exists")
	}
	if len(r.Checks) != 1 || r.Checks[0].Outcome != "fail" {
		t.Fatalf("checks %+v", r.Checks)
	}
	st, _ := newFileLocker(t, h.lockd).Status(context.Background(), "web")
	if len(st.Holders) != 0 {
		t.Fatal("slot kept after the check failed")
	}

	if err := os.Remove(hold); err != nil {
		t.Fatal(err)
	}
	h.clock.Advance(10 * time.Minute) // past the back-off
	want(t, step(t, ag), scheduler.DecisionReboot, "rebooting")
	if n.rebootCount() != 1 {
		t.Fatalf("%d reboots", n.rebootCount())
	}
}
