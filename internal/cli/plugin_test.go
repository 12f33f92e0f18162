package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/offpeak/offpeak/internal/builtin"
	"github.com/offpeak/offpeak/internal/pluginhost"
)

func runCLI(t *testing.T, exe string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	a := &App{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errb, Now: time.Now, Exe: exe}
	code := a.Run(context.Background(), args)
	return code, out.String(), errb.String()
}

func TestPluginServeRejectsUnknown(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"plugin", "serve", "gadget", "file"}, `KIND must be locker or check, not "gadget"`},
		{[]string{"plugin", "serve", "locker", "no-such"}, `no built-in locker "no-such"`},
		{[]string{"plugin", "serve", "check", "no-such"}, `no built-in check "no-such"`},
		{[]string{"plugin", "serve", "locker"}, "accepts 2 arg(s)"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			code, _, stderr := runCLI(t, "", tc.args...)
			if code == 0 || !strings.Contains(stderr, tc.want) {
				t.Fatalf("exit %d, stderr %q, want %q", code, stderr, tc.want)
			}
		})
	}
}

func TestPluginsList(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "etc/offpeak/plugins")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// Not a program: listed with its checksum and why it did not answer.
	if err := os.WriteFile(filepath.Join(dir, "offpeak-plugin-junk"), []byte("junk\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(root, "no-offpeak-binary")

	if code, _, stderr := runCLI(t, missing, "plugins", "list", "--root", root, "-o", "yaml"); code == 0 || !strings.Contains(stderr, "--output must be one of text, json") {
		t.Fatalf("bad --output: exit %d, %q", code, stderr)
	}

	code, stdout, stderr := runCLI(t, missing, "plugins", "list", "--root", root, "-o", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var infos []pluginhost.PluginInfo
	if err := json.Unmarshal([]byte(stdout), &infos); err != nil {
		t.Fatalf("%v: %s", err, stdout)
	}
	byName := map[string]pluginhost.PluginInfo{}
	for _, p := range infos {
		byName[p.Name] = p
	}
	reg := builtin.New()
	for _, name := range reg.Lockers.Names() {
		if p := byName[name]; !p.Builtin || p.Answered || p.Path != missing {
			t.Errorf("built-in %s: %+v", name, p)
		}
	}
	junk := byName["junk"]
	if junk.Answered || junk.Builtin || junk.SHA256 != "edff58f2a441868dc58c35d06f2b1c86e12e12bedfaa793a49c227672f77566e" ||
		!strings.Contains(junk.Error, "exec format error") {
		t.Errorf("junk: %+v", junk)
	}

	code, stdout, stderr = runCLI(t, missing, "plugins", "list", "--root", root)
	if code != 0 || !strings.Contains(stdout, "NAME") || !strings.Contains(stdout, "junk: starting ") {
		t.Fatalf("text: exit %d\n%s\n%s", code, stdout, stderr)
	}
}

// TestUnsafePluginAndPolicyRefused: a world-writable plugin in a
// world-writable plugin directory is neither run by `plugins list` nor by
// the agent's pass, and a world-writable policy is not loaded; each
// refusal names the path and its mode.
func TestUnsafePluginAndPolicyRefused(t *testing.T) {
	root := t.TempDir()
	marker := filepath.Join(t.TempDir(), "ran")
	dir := filepath.Join(root, "etc/offpeak/plugins")
	evil := filepath.Join(dir, "offpeak-plugin-evil")
	writeFile(t, evil, "#!/bin/sh\necho ran >> "+marker+"\nexit 1\n")
	for _, p := range []string{dir, evil} {
		if err := os.Chmod(p, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(root, "etc/machine-id"), "node-a\n")
	touch(t, filepath.Join(root, "run/reboot-required"))
	pol := writeFile(t, filepath.Join(root, "etc/offpeak/policy.toml"),
		"strategy = \"reboot\"\n[[health]]\nname = \"evil\"\nplugin = \"evil\"\nphase = \"pre-reboot\"\n")
	ran := func() bool { _, err := os.Stat(marker); return err == nil }

	out, errOut, code := run(t, &App{Root: root}, "plugins", "list")
	if code != 0 || !strings.Contains(out, "installed,refused") || !strings.Contains(out, dir+" is writable by group or others (mode 0777 drwxrwxrwx") {
		t.Errorf("plugins list: exit %d\n%s%s", code, out, errOut)
	}
	out, errOut, code = run(t, &App{Root: root, Rebooter: &recordingRebooter{}}, "check", "--dry-run", "-o", "json")
	if code != 0 || !strings.Contains(out, `"decision": "wait-health"`) || !strings.Contains(out, "unsafe permissions") {
		t.Errorf("check: exit %d\n%s%s", code, out, errOut)
	}
	if ran() {
		t.Fatal("the world-writable plugin was executed")
	}

	if err := os.Chmod(pol, 0o666); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"policy", "validate"}, {"check", "--dry-run"}, {"policy", "show"}} {
		_, errOut, code := run(t, &App{Root: root}, args...)
		if code == 0 || !strings.Contains(errOut, pol+" is writable by group or others (mode 0666 -rw-rw-rw-") {
			t.Errorf("%v with a world-writable policy: exit %d, stderr %q", args, code, errOut)
		}
	}
}
