package detect

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/offpeak/offpeak/installer"
	"github.com/offpeak/offpeak/internal/paths"
	"github.com/offpeak/offpeak/scheduler"
	"github.com/offpeak/offpeak/scheduler/policy"
)

type fakeInstaller struct {
	st  installer.Status
	err error
}

func (f fakeInstaller) Status(context.Context) (installer.Status, error) { return f.st, f.err }

func script(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "probe")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDetect(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "run"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "run/reboot-required"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	file := func(p string) policy.Detect { return policy.Detect{Kind: "file", Path: p} }
	cmd := func(needed int, argv ...string) policy.Detect {
		return policy.Detect{Kind: "command", Argv: argv, NeededExit: needed, Timeout: policy.Duration(5 * time.Second)}
	}
	tests := []struct {
		name    string
		sources []policy.Detect
		inst    StatusSource
		want    scheduler.Staged
	}{
		{"debian sentinel present", []policy.Detect{file("/run/reboot-required")}, nil, scheduler.StagedYes},
		{"suse sentinel absent", []policy.Detect{file("/run/reboot-needed")}, nil, scheduler.StagedNo},
		{"dnf needs-restarting exit 1 means needed", []policy.Detect{cmd(1, script(t, "exit 1"))}, nil, scheduler.StagedYes},
		{"exit 0 means not needed", []policy.Detect{cmd(1, script(t, "exit 0"))}, nil, scheduler.StagedNo},
		{"zypper needs-rebooting exit 102", []policy.Detect{cmd(102, script(t, "exit 102"))}, nil, scheduler.StagedYes},
		{"another exit status is unknown", []policy.Detect{cmd(102, script(t, "exit 7"))}, nil, scheduler.StagedUnknown},
		{"missing command is unknown", []policy.Detect{cmd(1, "/nonexistent/needs-restarting")}, nil, scheduler.StagedUnknown},
		{"crashing command is unknown", []policy.Detect{cmd(1, script(t, "kill -SEGV $$"))}, nil, scheduler.StagedUnknown},
		{"unknown beats yes", []policy.Detect{file("/run/reboot-required"), cmd(1, "/nonexistent/x")}, nil, scheduler.StagedUnknown},
		{"yes beats no", []policy.Detect{file("/run/reboot-needed"), file("/run/reboot-required")}, nil, scheduler.StagedYes},
		{"installer staged", []policy.Detect{{Kind: "installer"}}, fakeInstaller{st: installer.Status{Backend: "gpt", Staged: true, StagedVersion: "4081.2.0"}}, scheduler.StagedYes},
		{"installer error is unknown", []policy.Detect{{Kind: "installer"}}, fakeInstaller{err: errors.New("dbus down")}, scheduler.StagedUnknown},
		{"installer missing is unknown", []policy.Detect{{Kind: "installer"}}, nil, scheduler.StagedUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := &Detector{Sources: tt.sources, Layout: paths.Layout{Root: root}, Installer: tt.inst}
			got := d.Detect(context.Background())
			if got.State != tt.want {
				t.Fatalf("got %v (%s), want %v", got.State, got.Reason, tt.want)
			}
			if got.Reason == "" {
				t.Fatal("no reason")
			}
		})
	}
}

func TestCommandTimeoutIsUnknown(t *testing.T) {
	d := &Detector{Sources: []policy.Detect{{Kind: "command", Argv: []string{script(t, "exec sleep 30")}, NeededExit: 1, Timeout: policy.Duration(100 * time.Millisecond)}}}
	if got := d.Detect(context.Background()); got.State != scheduler.StagedUnknown {
		t.Fatalf("got %v", got)
	}
}

type countingInstaller struct {
	fakeInstaller
	calls int
}

func (c *countingInstaller) Status(ctx context.Context) (installer.Status, error) {
	c.calls++
	return c.fakeInstaller.Status(ctx)
}

// TestInstallerAskedOnce: one pass asks the installer once (rpm-ostree status
// takes a second), and the booted system is reported even when nothing is
// staged.
func TestInstallerAskedOnce(t *testing.T) {
	inst := &countingInstaller{fakeInstaller: fakeInstaller{st: installer.Status{Backend: "rpm-ostree", BootedVersion: "41.20250101"}}}
	d := &Detector{Sources: []policy.Detect{{Kind: "installer"}}, Installer: inst}
	got := d.Detect(context.Background())
	if inst.calls != 1 {
		t.Fatalf("installer asked %d times", inst.calls)
	}
	if got.State != scheduler.StagedNo || got.Backend != "rpm-ostree" || got.Booted != "41.20250101" {
		t.Fatalf("got %+v", got)
	}
}
