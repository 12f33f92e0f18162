package cli

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
