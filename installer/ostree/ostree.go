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
//
// offpeak's rule that a slot whose bytes changed is unbootable until they
// verified, and that rollback goes only to a verified slot that booted,
// holds here by construction, so these backends add no check of their
// own: OSTree never rewrites a deployment in place. Staging checks out a
// new deployment beside the others from content-addressed (and, where the
// remote says so, signed) objects and adds its boot entry only once the
// checkout is complete, so an interrupted stage leaves no bootable
// half-written deployment; and the rollback deployment is the one booted
// before, whose files staging does not touch.
package ostree

import (
	"context"

	"github.com/offpeak/offpeak/installer"
	"github.com/offpeak/offpeak/internal/registry"
)

// Runner runs a command (argv, no shell) and returns its stdout.
type Runner interface {
	Run(ctx context.Context, argv []string) (stdout []byte, err error)
}

// ExecRunner runs commands with os/exec.
type ExecRunner = installer.ExecRunner

// RPMOSTreeModule registers the rpm-ostree backend with offpeak's built-ins.
func RPMOSTreeModule() registry.Module[installer.Backend] {
	return noConfig(RPMOSTreeName, func() installer.Backend { return &RPMOSTree{} })
}

// BootcModule registers the bootc backend with offpeak's built-ins.
func BootcModule() registry.Module[installer.Backend] {
	return noConfig(BootcName, func() installer.Backend { return &Bootc{} })
}

// noConfig is the module of a backend without settings (policy validation
// refuses any given).
func noConfig(name string, build func() installer.Backend) registry.Module[installer.Backend] {
	return registry.Module[installer.Backend]{Name: name, Config: func() any { return &installer.NoConfig{} },
		New: func(context.Context, registry.Env) (installer.Backend, func(), error) { return build(), nil, nil }}
}

func shortChecksum(c string) string {
	if len(c) > 12 {
		return c[:12]
	}
	return c
}
