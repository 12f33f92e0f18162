// Package detect answers "is a reboot needed?" from the policy's [[detect]]
// sources: sentinel files, a command's exit status, or the installer.
package detect

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/offpeak/offpeak/installer"
	"github.com/offpeak/offpeak/internal/paths"
	"github.com/offpeak/offpeak/internal/redact"
	"github.com/offpeak/offpeak/scheduler"
	"github.com/offpeak/offpeak/scheduler/policy"
)

// StatusSource is the installer side of kind "installer".
type StatusSource interface {
	Status(ctx context.Context) (installer.Status, error)
}

// Detector combines the sources: one that cannot answer makes the whole
// answer unknown (never reboot on a guess); otherwise any "yes" wins.
type Detector struct {
	Sources []policy.Detect
	Layout  paths.Layout
	// Installer answers kind "installer"; nil makes that kind unknown.
	Installer StatusSource
}

// Detect implements scheduler.Detector.
func (d *Detector) Detect(ctx context.Context) scheduler.Detection {
	var yes, unknown []string
	version, backend, booted := "", "", ""
	for _, s := range d.Sources {
		a := d.one(ctx, s)
		if a.backend != "" {
			// The booted system is reported even when nothing is staged.
			backend, booted = a.backend, a.booted
		}
		switch a.state {
		case scheduler.StagedYes:
			yes = append(yes, a.why)
			if version == "" {
				version = a.version
			}
		case scheduler.StagedUnknown:
			unknown = append(unknown, a.why)
		}
	}
	switch {
	case len(unknown) > 0:
		return scheduler.Detection{State: scheduler.StagedUnknown, Reason: strings.Join(unknown, "; "), Backend: backend, Booted: booted}
	case len(yes) > 0:
		return scheduler.Detection{State: scheduler.StagedYes, Version: version, Reason: strings.Join(yes, "; "), Backend: backend, Booted: booted}
	case len(d.Sources) == 0:
		return scheduler.Detection{State: scheduler.StagedNo, Reason: "no reboot-needed source configured"}
	}
	return scheduler.Detection{State: scheduler.StagedNo, Reason: "no update staged", Backend: backend, Booted: booted}
}

// answer is one source's verdict; backend and booted come from an
// installer that answered.
type answer struct {
	state           scheduler.Staged
	version, why    string
	backend, booted string
}

func (d *Detector) one(ctx context.Context, s policy.Detect) answer {
	switch s.Kind {
	case policy.DetectFile:
		p := d.Layout.Join(s.Path)
		_, err := os.Stat(p)
		switch {
		case err == nil:
			return answer{state: scheduler.StagedYes, why: s.Path + " exists"}
		case errors.Is(err, fs.ErrNotExist):
			return answer{state: scheduler.StagedNo, why: s.Path + " absent"}
		default:
			return answer{state: scheduler.StagedUnknown, why: fmt.Sprintf("%s: %v", s.Path, err)}
		}
	case policy.DetectCommand:
		state, why := runCommand(ctx, s)
		return answer{state: state, why: why}
	case policy.DetectInstaller:
		if d.Installer == nil {
			return answer{state: scheduler.StagedUnknown, why: "no installer backend"}
		}
		st, err := d.Installer.Status(ctx)
		if err != nil {
			return answer{state: scheduler.StagedUnknown, why: fmt.Sprintf("installer: %v", err)}
		}
		a := answer{state: scheduler.StagedNo, why: st.Backend + ": nothing staged", backend: st.Backend, booted: st.BootedVersion}
		if st.Staged {
			a.state, a.version, a.why = scheduler.StagedYes, st.StagedVersion, fmt.Sprintf("%s staged %s", st.Backend, st.StagedVersion)
		}
		return a
	}
	return answer{state: scheduler.StagedUnknown, why: fmt.Sprintf("unknown detect kind %q", s.Kind)}
}

// runCommand maps an exit status: 0 = not needed, needed_exit = needed,
// anything else (other codes, missing binary, a signal, a timeout) = unknown.
func runCommand(ctx context.Context, s policy.Detect) (scheduler.Staged, string) {
	if len(s.Argv) == 0 {
		return scheduler.StagedUnknown, "command: empty argv"
	}
	timeout := s.Timeout.D()
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	c, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(c, s.Argv[0], s.Argv[1:]...)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}
	err := cmd.Run()
	// The command line goes into status and logs: hide credentials in it.
	name := redact.String(strings.Join(s.Argv, " "))
	if c.Err() != nil {
		return scheduler.StagedUnknown, fmt.Sprintf("%s: timed out after %s", name, timeout)
	}
	if err == nil {
		return scheduler.StagedNo, name + ": exit 0 (no reboot needed)"
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return scheduler.StagedUnknown, fmt.Sprintf("%s: %v", name, err)
	}
	code := ee.ExitCode()
	switch {
	case code < 0:
		return scheduler.StagedUnknown, fmt.Sprintf("%s: %v", name, ee)
	case code == s.NeededExit:
		return scheduler.StagedYes, fmt.Sprintf("%s: exit %d (reboot needed)", name, code)
	}
	return scheduler.StagedUnknown, fmt.Sprintf("%s: unexpected exit %d (needed is %d)", name, code, s.NeededExit)
}
