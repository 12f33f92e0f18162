package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const migrateData = "../migrate/testdata"

// From zincati's drop-in directories to `offpeak next`: the policy is
// written, validates, and lists the windows zincati opens.
func TestMigrateZincatiToNext(t *testing.T) {
	app := &App{Now: func() time.Time { return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) }}
	out := filepath.Join(t.TempDir(), "etc/offpeak/policy.toml")
	stdout, stderr, code := run(t, app, "migrate", "zincati",
		filepath.Join(migrateData, "zincati/periodic/usr/lib/zincati/config.d"),
		filepath.Join(migrateData, "zincati/periodic/etc/zincati/config.d"),
		"--output-file", out)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if stdout != "" {
		t.Errorf("stdout with --output-file: %q", stdout)
	}
	for _, want := range []string{"note: zincati fetched updates", "no equivalent: " + migrateData + "/zincati/periodic/usr/lib/zincati/config.d/10-identity.toml:5: identity.group", "wrote " + out} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if _, errOut, code := run(t, app, "policy", "validate", "--policy", out); code != 0 {
		t.Fatalf("policy validate: exit %d: %s", code, errOut)
	}
	js, errOut, code := run(t, app, "next", "--policy", out, "--from", "2026-03-02T06:00:00Z", "--count", "3", "--output", "json")
	if code != 0 {
		t.Fatalf("next: exit %d: %s", code, errOut)
	}
	var ws []windowJSON
	if err := json.Unmarshal([]byte(js), &ws); err != nil {
		t.Fatalf("%v: %s", err, js)
	}
	var got []string
	for _, w := range ws {
		got = append(got, w.Window+" "+w.Start+" "+w.End)
	}
	want := []string{
		"zincati-2 2026-03-04T01:00:00Z 2026-03-04T01:30:00Z",
		"zincati-1 2026-03-07T23:30:00Z 2026-03-08T00:30:00Z",
		"zincati-1 2026-03-08T23:30:00Z 2026-03-09T00:30:00Z",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("next:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// An existing policy is never replaced unless asked.
	before, _ := os.ReadFile(out)
	_, stderr, code = run(t, app, "migrate", "kured", filepath.Join(migrateData, "kured/kured.flags"), "--output-file", out)
	if after, _ := os.ReadFile(out); code == 0 || !strings.Contains(stderr, "exists; choose another --output-file or add --force") || string(after) != string(before) {
		t.Fatalf("overwrite without --force: exit %d: %s", code, stderr)
	}
	if _, stderr, code = run(t, app, "migrate", "kured", filepath.Join(migrateData, "kured/kured.flags"), "--output-file", out, "--force"); code != 0 {
		t.Fatalf("--force: exit %d: %s", code, stderr)
	}
	if after, _ := os.ReadFile(out); !strings.Contains(string(after), "offpeak migrate kured") {
		t.Fatalf("not replaced:\n%s", after)
	}
}

func TestMigrateToStdout(t *testing.T) {
	tests := []struct {
		args     []string
		contains []string
	}{
		{
			[]string{"locksmith", migrateData + "/locksmith/daily/update.conf", "--timezone", "America/New_York"},
			[]string{`timezone = "America/New_York"`, "# from " + migrateData + "/locksmith/daily/update.conf:2: REBOOT_STRATEGY=\"reboot\""},
		},
		{
			[]string{"kured", migrateData + "/kured/kured-ds.yaml"},
			[]string{`start = "0 22 * * MON-THU"`, `path = "/var/run/reboot-required"`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.args[0], func(t *testing.T) {
			stdout, stderr, code := run(t, &App{}, append([]string{"migrate"}, tt.args...)...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			for _, want := range tt.contains {
				if !strings.Contains(stdout, want) {
					t.Errorf("stdout lacks %q:\n%s", want, stdout)
				}
			}
			if !strings.Contains(stderr, "note: ") {
				t.Errorf("no notes on stderr: %s", stderr)
			}
		})
	}
}

func TestMigrateErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "update.conf")
	if err := os.WriteFile(bad, []byte("REBOOT_STRATEGY=etcd-lock\nLOCKSMITHD_REBOOT_WINDOW_START=Thu 25:00\nLOCKSMITHD_REBOOT_WINDOW_LENGTH=1h\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "policy.toml")
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"locksmith", bad, "--output-file", out}, bad + `:2: LOCKSMITHD_REBOOT_WINDOW_START: invalid time of day "25:00"`},
		{[]string{"airlock", bad}, `unknown source "airlock" (one of locksmith, zincati, kured)`},
		{[]string{"locksmith", dir}, "a directory; locksmith takes files"},
		{[]string{"kured", filepath.Join(dir, "missing")}, "no such file"},
		{[]string{"locksmith", bad, "--timezone", "Local"}, "name an IANA zone"},
		{[]string{"zincati"}, "requires at least 2 arg(s)"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			stdout, stderr, code := run(t, &App{}, append([]string{"migrate"}, tt.args...)...)
			if code != 2 || !strings.Contains(stderr, tt.want) || stdout != "" {
				t.Fatalf("exit %d, stdout %q, stderr %q; want %q", code, stdout, stderr, tt.want)
			}
		})
	}
	if _, err := os.Stat(out); err == nil {
		t.Fatal("a policy was written from a bad source")
	}
}

func TestVersionCommand(t *testing.T) {
	js, stderr, code := run(t, &App{}, "version", "--output", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var v map[string]any
	if err := json.Unmarshal([]byte(js), &v); err != nil {
		t.Fatalf("%v: %s", err, js)
	}
	for _, k := range []string{"version", "go_version", "platform", "plugin_protocol"} {
		if _, ok := v[k]; !ok {
			t.Errorf("version json lacks %q: %s", k, js)
		}
	}
	text, _, _ := run(t, &App{}, "version")
	long, _, _ := run(t, &App{}, "--version")
	if !strings.HasPrefix(text, "offpeak ") || !strings.Contains(text, "plugin protocol: 1") || text != long {
		t.Errorf("version:\n%s\n--version:\n%s", text, long)
	}
	if _, stderr, code := run(t, &App{}, "version", "-o", "yaml"); code == 0 || !strings.Contains(stderr, "--output must be one of text, json") {
		t.Errorf("bad --output: exit %d %s", code, stderr)
	}
}
