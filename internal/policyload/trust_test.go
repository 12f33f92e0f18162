package policyload

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/offpeak/offpeak/internal/paths"
)

func TestMain(m *testing.M) {
	// Policies the tests write must not be group-writable (Load refuses
	// those) whatever the caller's umask.
	syscall.Umask(0o022)
	os.Exit(m.Run())
}

// TestLoadRefusesUnsafeFiles: a policy can name commands that run as root,
// so a policy file or drop-in directory that someone other than root (or
// the user running offpeak) could change is refused, naming the path and
// its mode, as sshd's StrictModes does. A 0644 policy in 0755 directories
// loads, also below a root-owned sticky directory such as /tmp.
func TestLoadRefusesUnsafeFiles(t *testing.T) {
	const otherUID = 4242
	needRoot := func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("making a file owned by another user needs root (CI runs the tests as root)")
		}
	}
	chmod := func(t *testing.T, p string, m fs.FileMode) {
		t.Helper()
		if err := os.Chmod(p, m); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name string
		// prep changes the tree below root (which holds the files below)
		// and returns the path the refusal must name ("" when the policy
		// must load) and the --policy path ("" for the search order).
		prep func(t *testing.T, root string) (at, path string)
	}{
		{"0644 policy in 0755 directories", func(t *testing.T, root string) (string, string) { return "", "" }},
		{"world-writable policy.toml", func(t *testing.T, root string) (string, string) {
			p := filepath.Join(root, "etc/offpeak/policy.toml")
			chmod(t, p, 0o666)
			return p, ""
		}},
		{"group-writable policy.toml", func(t *testing.T, root string) (string, string) {
			p := filepath.Join(root, "etc/offpeak/policy.toml")
			chmod(t, p, 0o664)
			return p, ""
		}},
		{"policy.toml owned by another user", func(t *testing.T, root string) (string, string) {
			needRoot(t)
			p := filepath.Join(root, "etc/offpeak/policy.toml")
			if err := os.Chown(p, otherUID, -1); err != nil {
				t.Fatal(err)
			}
			return p, ""
		}},
		{"world-writable admin drop-in directory", func(t *testing.T, root string) (string, string) {
			p := filepath.Join(root, "etc/offpeak/policy.d")
			chmod(t, p, 0o777)
			return p, ""
		}},
		{"world-writable empty drop-in directory", func(t *testing.T, root string) (string, string) {
			p := filepath.Join(root, "etc/offpeak/policy.d")
			if err := os.Remove(filepath.Join(p, "50-admin.toml")); err != nil {
				t.Fatal(err)
			}
			chmod(t, p, 0o777)
			return p, ""
		}},
		{"drop-in directory owned by another user", func(t *testing.T, root string) (string, string) {
			needRoot(t)
			p := filepath.Join(root, "usr/lib/offpeak/policy.d")
			if err := os.Chown(p, otherUID, -1); err != nil {
				t.Fatal(err)
			}
			return p, ""
		}},
		{"group-writable vendor drop-in", func(t *testing.T, root string) (string, string) {
			p := filepath.Join(root, "usr/lib/offpeak/policy.d/10-vendor.toml")
			chmod(t, p, 0o664)
			return p, ""
		}},
		{"world-writable /etc above the policy", func(t *testing.T, root string) (string, string) {
			p := filepath.Join(root, "etc")
			chmod(t, p, 0o777)
			return p, ""
		}},
		{"--policy in a world-writable directory", func(t *testing.T, root string) (string, string) {
			d := filepath.Join(root, "srv")
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
			chmod(t, d, 0o777)
			return d, writeFile(t, root, "srv/policy.toml", "strategy = \"off\"\n")
		}},
		{"--policy below a root-owned sticky directory", func(t *testing.T, root string) (string, string) {
			needRoot(t)
			d := filepath.Join(root, "tmp")
			if err := os.Mkdir(d, 0o755); err != nil {
				t.Fatal(err)
			}
			chmod(t, d, 0o777|fs.ModeSticky)
			return "", writeFile(t, root, "tmp/offpeak/policy.toml", "strategy = \"off\"\n")
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			writeFile(t, root, "usr/lib/offpeak/policy.d/10-vendor.toml", "[node]\ngroup = \"vendor\"\n")
			writeFile(t, root, "etc/offpeak/policy.toml", "[lock]\nslots = 2\n")
			writeFile(t, root, "etc/offpeak/policy.d/50-admin.toml", "[node]\ngroup = \"admin\"\n")
			at, path := tc.prep(t, root)
			_, err := Load(Options{Layout: paths.Layout{Root: root}, Path: path, Now: refNow})
			if at == "" {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				return
			}
			fi, serr := os.Stat(at)
			if serr != nil {
				t.Fatal(serr)
			}
			if !errors.Is(err, ErrUnsafe) || !strings.Contains(err.Error(), at) || !strings.Contains(err.Error(), fi.Mode().String()) {
				t.Fatalf("Load = %v; want ErrUnsafe naming %s and its mode %s", err, at, fi.Mode())
			}
		})
	}
}
