package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const versionPkg = "github.com/offpeak/offpeak/internal/version"

// stampFlags are the -X settings the Makefile passes; TestMakefileStamps
// keeps the two in step.
func stampFlags(ver, commit, date string) string {
	return "-X " + versionPkg + ".version=" + ver +
		" -X " + versionPkg + ".commit=" + commit +
		" -X " + versionPkg + ".date=" + date
}

func TestMakefileStamps(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	for _, sym := range []string{".version=$(VERSION)", ".commit=$(COMMIT)", ".date=$(DATE)"} {
		if !strings.Contains(string(b), "-X $(VERSION_PKG)"+sym) {
			t.Errorf("Makefile does not stamp %s", sym)
		}
	}
	if !strings.Contains(string(b), "VERSION_PKG := "+versionPkg+"\n") {
		t.Errorf("Makefile's VERSION_PKG is not %s", versionPkg)
	}
}

// A stamped binary reports its stamp through `version`, `--version`, and —
// the reported bug, where every built-in showed "(devel)" — through the
// built-in plugins that `plugins list` starts by re-executing the binary.
func TestStampedVersion(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the offpeak binary")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go toolchain not on PATH")
	}
	const (
		ver    = "v9.8.7-test"
		commit = "0123456789abcdef0123456789abcdef01234567"
		date   = "2026-01-02T03:04:05Z"
	)
	dir := t.TempDir()
	bin := filepath.Join(dir, "offpeak")
	build := exec.Command(goBin, "build", "-trimpath", "-ldflags", stampFlags(ver, commit, date), "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	root := t.TempDir()
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"--root", root}, args...)...)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("offpeak %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
		}
		return string(out)
	}

	var info struct {
		Version        string `json:"version"`
		Commit         string `json:"commit"`
		BuildDate      string `json:"build_date"`
		GoVersion      string `json:"go_version"`
		PluginProtocol int    `json:"plugin_protocol"`
	}
	out := run("version", "--output", "json")
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if info.Version != ver || info.Commit != commit || info.BuildDate != date || !strings.HasPrefix(info.GoVersion, "go1.") || info.PluginProtocol != 1 {
		t.Fatalf("version --output json: %+v", info)
	}
	text := run("version")
	long := run("--version")
	if text != long {
		t.Fatalf("--version differs from version:\n%s\n%s", long, text)
	}
	for _, want := range []string{"offpeak " + ver, commit, date, "plugin protocol: 1"} {
		if !strings.Contains(text, want) {
			t.Errorf("version output lacks %q:\n%s", want, text)
		}
	}

	var plugins []struct {
		Name     string `json:"name"`
		Builtin  bool   `json:"builtin"`
		Answered bool   `json:"answered"`
		Version  string `json:"version"`
	}
	out = run("plugins", "list", "--output", "json")
	if err := json.Unmarshal([]byte(out), &plugins); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	builtins := 0
	for _, p := range plugins {
		if !p.Builtin {
			continue
		}
		builtins++
		if !p.Answered || p.Version != ver {
			t.Errorf("built-in %s: answered %v, version %q, want %q", p.Name, p.Answered, p.Version, ver)
		}
	}
	if builtins == 0 {
		t.Fatalf("no built-in plugins listed: %s", out)
	}
}
