package safepath

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestMain(m *testing.M) {
	// The cases set every mode explicitly; a umask such as 002 must not
	// make the safe ones group-writable.
	syscall.Umask(0o022)
	os.Exit(m.Run())
}

// otherUID owns the files of the "not owned by" cases.
const otherUID = 4242

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("making a file owned by another user needs root (CI runs the tests as root)")
	}
}

func mkdir(t *testing.T, p string, mode fs.FileMode) string {
	t.Helper()
	if err := os.Mkdir(p, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

func file(t *testing.T, p string, mode fs.FileMode) string {
	t.Helper()
	if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

func chown(t *testing.T, p string, uid int) {
	t.Helper()
	needRoot(t)
	if err := os.Lchown(p, uid, -1); err != nil {
		t.Fatal(err)
	}
}

func TestCheck(t *testing.T) {
	tests := []struct {
		name string
		// build makes the case below base (a root-owned 0755 directory
		// under t.TempDir) and returns the path to check and the path
		// at fault ("" when it must pass).
		build func(t *testing.T, base string) (path, at string)
		euid  int // -1: the real one
	}{
		{"0644 file in 0755 dirs", func(t *testing.T, b string) (string, string) {
			return file(t, filepath.Join(b, "policy.toml"), 0o644), ""
		}, -1},
		{"0755 binary", func(t *testing.T, b string) (string, string) {
			return file(t, filepath.Join(b, "offpeak-plugin-x"), 0o755), ""
		}, -1},
		{"0755 directory", func(t *testing.T, b string) (string, string) {
			return mkdir(t, filepath.Join(b, "policy.d"), 0o755), ""
		}, -1},
		{"world-writable file", func(t *testing.T, b string) (string, string) {
			p := file(t, filepath.Join(b, "f"), 0o666)
			return p, p
		}, -1},
		{"group-writable file", func(t *testing.T, b string) (string, string) {
			p := file(t, filepath.Join(b, "f"), 0o664)
			return p, p
		}, -1},
		{"setuid world-writable binary", func(t *testing.T, b string) (string, string) {
			p := file(t, filepath.Join(b, "f"), 0o757|fs.ModeSetuid)
			return p, p
		}, -1},
		{"world-writable directory asked about", func(t *testing.T, b string) (string, string) {
			p := mkdir(t, filepath.Join(b, "plugins"), 0o777)
			return p, p
		}, -1},
		{"sticky world-writable directory asked about", func(t *testing.T, b string) (string, string) {
			p := mkdir(t, filepath.Join(b, "plugins"), 0o777|fs.ModeSticky)
			return p, p
		}, -1},
		{"file in a world-writable directory", func(t *testing.T, b string) (string, string) {
			d := mkdir(t, filepath.Join(b, "d"), 0o777)
			return file(t, filepath.Join(d, "f"), 0o755), d
		}, -1},
		{"file in a group-writable directory", func(t *testing.T, b string) (string, string) {
			d := mkdir(t, filepath.Join(b, "d"), 0o775)
			return file(t, filepath.Join(d, "f"), 0o755), d
		}, -1},
		{"world-writable grandparent", func(t *testing.T, b string) (string, string) {
			g := mkdir(t, filepath.Join(b, "g"), 0o777)
			d := mkdir(t, filepath.Join(g, "d"), 0o755)
			return file(t, filepath.Join(d, "f"), 0o644), g
		}, -1},
		{"root-owned sticky grandparent, as /tmp", func(t *testing.T, b string) (string, string) {
			g := mkdir(t, filepath.Join(b, "tmp"), 0o777|fs.ModeSticky)
			d := mkdir(t, filepath.Join(g, "d"), 0o755)
			return file(t, filepath.Join(d, "f"), 0o644), ""
		}, -1},
		{"sticky grandparent owned by another user", func(t *testing.T, b string) (string, string) {
			g := mkdir(t, filepath.Join(b, "tmp"), 0o777|fs.ModeSticky)
			chown(t, g, otherUID)
			d := mkdir(t, filepath.Join(g, "d"), 0o755)
			return file(t, filepath.Join(d, "f"), 0o644), g
		}, -1},
		{"file owned by another user", func(t *testing.T, b string) (string, string) {
			p := file(t, filepath.Join(b, "f"), 0o755)
			chown(t, p, otherUID)
			return p, p
		}, -1},
		{"directory owned by another user", func(t *testing.T, b string) (string, string) {
			d := mkdir(t, filepath.Join(b, "d"), 0o755)
			chown(t, d, otherUID)
			return file(t, filepath.Join(d, "f"), 0o644), d
		}, -1},
		{"file owned by the running user when not root", func(t *testing.T, b string) (string, string) {
			p := file(t, filepath.Join(b, "f"), 0o644)
			chown(t, p, otherUID)
			return p, ""
		}, otherUID},
		{"file owned by a third user when not root", func(t *testing.T, b string) (string, string) {
			p := file(t, filepath.Join(b, "f"), 0o644)
			chown(t, p, otherUID+1)
			return p, p
		}, otherUID},
		{"symlink in a safe directory to a file in an unsafe one", func(t *testing.T, b string) (string, string) {
			d := mkdir(t, filepath.Join(b, "d"), 0o777)
			f := file(t, filepath.Join(d, "f"), 0o755)
			l := filepath.Join(b, "link")
			if err := os.Symlink(f, l); err != nil {
				t.Fatal(err)
			}
			return l, d
		}, -1},
		{"symlink in an unsafe directory to a safe file", func(t *testing.T, b string) (string, string) {
			f := file(t, filepath.Join(b, "f"), 0o755)
			d := mkdir(t, filepath.Join(b, "d"), 0o777)
			l := filepath.Join(d, "link")
			if err := os.Symlink(f, l); err != nil {
				t.Fatal(err)
			}
			return l, d
		}, -1},
		{"symlink to a safe file in a safe directory", func(t *testing.T, b string) (string, string) {
			f := file(t, filepath.Join(b, "f"), 0o755)
			d := mkdir(t, filepath.Join(b, "d"), 0o755)
			l := filepath.Join(d, "link")
			if err := os.Symlink(f, l); err != nil {
				t.Fatal(err)
			}
			return l, ""
		}, -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			base := mkdir(t, filepath.Join(t.TempDir(), "base"), 0o755)
			path, at := tc.build(t, base)
			euid := tc.euid
			if euid < 0 {
				euid = os.Geteuid()
			}
			err := check(path, euid)
			if at == "" {
				if err != nil {
					t.Fatalf("Check(%s) = %v, want nil", path, err)
				}
				return
			}
			var e *Error
			if !errors.As(err, &e) || !errors.Is(err, ErrUnsafe) {
				t.Fatalf("Check(%s) = %v, want an *Error wrapping ErrUnsafe", path, err)
			}
			fi, serr := os.Stat(at)
			if serr != nil {
				t.Fatal(serr)
			}
			if e.At != at || !strings.Contains(err.Error(), at) || !strings.Contains(err.Error(), fi.Mode().String()) {
				t.Fatalf("refusal %q does not name %s and its mode %s", err, at, fi.Mode())
			}
		})
	}
}

func TestCheckMissing(t *testing.T) {
	err := Check(filepath.Join(t.TempDir(), "nope"))
	if !errors.Is(err, fs.ErrNotExist) || errors.Is(err, ErrUnsafe) {
		t.Fatalf("Check of a missing file = %v", err)
	}
}
