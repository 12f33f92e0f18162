// Package examples_test builds and tests the example modules below this
// directory. Each is a Go module of its own (a replace directive takes
// offpeak from this working tree), so `go test ./...` at the repository's
// root does not reach them; this test does, and checks that they import
// offpeak's public packages only.
package examples_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const module = "github.com/offpeak/offpeak"

func TestExampleModules(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the example modules")
	}
	mods, err := filepath.Glob("*/go.mod")
	if err != nil {
		t.Fatal(err)
	}
	more, err := filepath.Glob("plugins/*/go.mod")
	if err != nil {
		t.Fatal(err)
	}
	mods = append(mods, more...)
	if len(mods) < 3 {
		t.Fatalf("example modules %q: expected the public API example and two plugins", mods)
	}
	for _, m := range mods {
		dir := filepath.Dir(m)
		t.Run(filepath.ToSlash(dir), func(t *testing.T) {
			imports := goCmd(t, dir, "list", "-f", `{{join .Imports "\n"}}{{"\n"}}{{join .TestImports "\n"}}`, "./...")
			var used []string
			for _, imp := range strings.Fields(imports) {
				if imp != module && !strings.HasPrefix(imp, module+"/") {
					continue
				}
				used = append(used, imp)
				if strings.Contains(imp, "/internal/") || strings.HasSuffix(imp, "/internal") {
					t.Errorf("imports %s, which is not public", imp)
				}
			}
			if len(used) == 0 {
				t.Error("imports nothing of offpeak")
			}
			goCmd(t, dir, "vet", "./...")
			goCmd(t, dir, "test", "-count=1", "./...")
		})
	}
}

// goCmd runs the go command in dir and returns its output; a failure fails
// the test with that output.
func goCmd(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=readonly")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go %s in %s: %v\n%s", strings.Join(args, " "), dir, err, out)
	}
	return string(out)
}
