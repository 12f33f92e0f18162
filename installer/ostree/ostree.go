// Package ostree holds the installer backends for OSTree-based hosts:
// rpm-ostree (Fedora CoreOS, RHEL CoreOS, Silverblue) and bootc. Both stage a
// new deployment that becomes the default at the next boot and never reboot
// by themselves here: Stage runs `rpm-ostree upgrade` without --reboot and
// `bootc upgrade` without --apply.
//
// MarkGood is a no-op for both: OSTree has no per-boot "this deployment is
// good" marker to set. The previous deployment stays in the boot menu as
// the rollback target either way; greenboot is the tool that adds boot
// health gating on these systems, and would be the place to hook into.
package ostree

import (
	"context"

	"github.com/offpeak/offpeak/installer"
)

// Runner runs a command (argv, no shell) and returns its stdout.
type Runner interface {
	Run(ctx context.Context, argv []string) (stdout []byte, err error)
}

// ExecRunner runs commands with os/exec.
type ExecRunner = installer.ExecRunner

func shortChecksum(c string) string {
	if len(c) > 12 {
		return c[:12]
	}
	return c
}
