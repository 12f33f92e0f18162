package pluginhost

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/offpeak/offpeak/plugins"
)

// TestUnsafePluginsAreNotRun: a plugin file or directory that someone other
// than root could change is never executed, neither by `plugins list` nor
// when the agent asks for the plugin; the refusal names the path and its
// mode. Root-owned 0755 directories and binaries run, also below a
// root-owned sticky directory such as /tmp.
func TestUnsafePluginsAreNotRun(t *testing.T) {
	const otherUID = 4242
	needRoot := func(t *testing.T) {
		if os.Geteuid() != 0 {
			t.Skip("making a file owned by another user needs root (CI runs the tests as root)")
		}
	}
	tests := []struct {
		name string
		// layout builds the plugin directory below base and tweaks the
		// installed plugin; it returns the directory and the path that
		// must be named in the refusal ("" when the plugin must run).
		layout func(t *testing.T, base string, install func(dir string, mode fs.FileMode) string) (dir, at string)
	}{
		{"world-writable plugin in a world-writable directory", func(t *testing.T, b string, install func(string, fs.FileMode) string) (string, string) {
			d := mkdirMode(t, filepath.Join(b, "plugins"), 0o777)
			install(d, 0o777)
			return d, d
		}},
		{"world-writable plugin", func(t *testing.T, b string, install func(string, fs.FileMode) string) (string, string) {
			d := mkdirMode(t, filepath.Join(b, "plugins"), 0o755)
			return d, install(d, 0o757)
		}},
		{"group-writable plugin", func(t *testing.T, b string, install func(string, fs.FileMode) string) (string, string) {
			d := mkdirMode(t, filepath.Join(b, "plugins"), 0o755)
			return d, install(d, 0o775)
		}},
		{"group-writable directory", func(t *testing.T, b string, install func(string, fs.FileMode) string) (string, string) {
			d := mkdirMode(t, filepath.Join(b, "plugins"), 0o775)
			install(d, 0o755)
			return d, d
		}},
		{"world-writable parent", func(t *testing.T, b string, install func(string, fs.FileMode) string) (string, string) {
			p := mkdirMode(t, filepath.Join(b, "etc"), 0o777)
			d := mkdirMode(t, filepath.Join(p, "plugins"), 0o755)
			install(d, 0o755)
			return d, p
		}},
		{"plugin owned by another user", func(t *testing.T, b string, install func(string, fs.FileMode) string) (string, string) {
			needRoot(t)
			d := mkdirMode(t, filepath.Join(b, "plugins"), 0o755)
			p := install(d, 0o755)
			if err := os.Chown(p, otherUID, -1); err != nil {
				t.Fatal(err)
			}
			return d, p
		}},
		{"directory owned by another user", func(t *testing.T, b string, install func(string, fs.FileMode) string) (string, string) {
			needRoot(t)
			d := mkdirMode(t, filepath.Join(b, "plugins"), 0o755)
			install(d, 0o755)
			if err := os.Chown(d, otherUID, -1); err != nil {
				t.Fatal(err)
			}
			return d, d
		}},
		{"root-owned 0755 directory and binary", func(t *testing.T, b string, install func(string, fs.FileMode) string) (string, string) {
			d := mkdirMode(t, filepath.Join(b, "plugins"), 0o755)
			install(d, 0o755)
			return d, ""
		}},
		{"below a root-owned sticky directory", func(t *testing.T, b string, install func(string, fs.FileMode) string) (string, string) {
			needRoot(t)
			p := mkdirMode(t, filepath.Join(b, "tmp"), 0o777|fs.ModeSticky)
			d := mkdirMode(t, filepath.Join(p, "plugins"), 0o755)
			install(d, 0o755)
			return d, ""
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			base := mkdirMode(t, filepath.Join(t.TempDir(), "root"), 0o755)
			marker := filepath.Join(t.TempDir(), "ran")
			install := func(dir string, mode fs.FileMode) string {
				p := filepath.Join(dir, BinaryPrefix+"evil")
				script := fmt.Sprintf("#!/bin/sh\necho ran >> %s\nexit 1\n", marker)
				if err := os.WriteFile(p, []byte(script), 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(p, mode); err != nil {
					t.Fatal(err)
				}
				return p
			}
			dir, at := tc.layout(t, base, install)
			m := New(Options{Dirs: []string{dir}, StartTimeout: time.Minute})
			t.Cleanup(func() { m.Close() })
			ctx := ctxTimeout(t, time.Minute)

			list, _ := m.List(ctx)
			l, lerr := m.Locker("evil", nil)
			if lerr == nil {
				_, lerr = l.Status(ctx, "g")
			}
			c, cerr := m.Check("evil")
			if cerr == nil {
				_, cerr = c.Check(ctx, plugins.CheckRequest{Name: "x"})
			}
			_, statErr := os.Stat(marker)
			ran := statErr == nil

			if at == "" {
				if !ran {
					t.Fatalf("a safe plugin was not run; list %+v, locker %v", list, lerr)
				}
				return
			}
			if ran {
				t.Fatal("an unsafe plugin was executed")
			}
			fi, err := os.Stat(at)
			if err != nil {
				t.Fatal(err)
			}
			named := func(msg string) bool {
				return strings.Contains(msg, at) && strings.Contains(msg, fi.Mode().String())
			}
			found := false
			for _, p := range list {
				if named(p.Error) && !p.Answered {
					found = true
				}
			}
			if !found {
				t.Errorf("plugins list does not name %s and its mode %s: %+v", at, fi.Mode(), list)
			}
			for what, err := range map[string]error{"locker": lerr, "check": cerr} {
				if !errors.Is(err, ErrUnsafe) || !named(err.Error()) {
					t.Errorf("%s: %v; want ErrUnsafe naming %s and its mode", what, err, at)
				}
			}
		})
	}
}

func mkdirMode(t *testing.T, p string, mode fs.FileMode) string {
	t.Helper()
	if err := os.Mkdir(p, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	return p
}
