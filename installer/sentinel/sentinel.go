// Package sentinel is the installer backend for conventional distributions:
// the package manager installs updates and leaves a "reboot required" file;
// offpeak only reads it. It cannot stage, mark good or roll back.
package sentinel

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/offpeak/offpeak/installer"
	"github.com/offpeak/offpeak/internal/registry"
)

// Name is the backend's policy name.
const Name = "sentinel"

// DefaultPaths are the Debian/Ubuntu and SUSE sentinel files.
var DefaultPaths = []string{"/run/reboot-required", "/run/reboot-needed"}

// Config is [installer.config] for backend "sentinel".
type Config struct {
	Paths []string `json:"paths"`
}

// SecretKeys: the sentinel backend has no secret settings.
func (Config) SecretKeys() []string { return nil }

// Backend reports a reboot as staged while a sentinel file exists.
type Backend struct {
	Paths []string
	// Join maps a system path below the root (tests, --root).
	Join func(string) string
}

// Module registers the sentinel backend with offpeak's built-ins.
func Module() registry.Module[installer.Backend] {
	return installer.NewModule(Name, func(_ context.Context, env registry.Env, c *Config) (installer.Backend, func(), error) {
		return &Backend{Paths: c.Paths, Join: env.Join}, nil, nil
	})
}

func (b *Backend) Name() string { return Name }

func (b *Backend) paths() []string {
	if len(b.Paths) > 0 {
		return b.Paths
	}
	return DefaultPaths
}

// Status is staged when any sentinel exists. Debian's
// /run/reboot-required.pkgs, when present, names the packages, shown as the
// staged version.
func (b *Backend) Status(context.Context) (installer.Status, error) {
	st := installer.Status{Backend: Name}
	for _, p := range b.paths() {
		full := p
		if b.Join != nil {
			full = b.Join(p)
		}
		_, err := os.Stat(full)
		switch {
		case err == nil:
			st.Staged = true
			st.Detail = p + " exists"
			if pkgs, err := os.ReadFile(full + ".pkgs"); err == nil {
				st.StagedVersion = strings.Join(strings.Fields(string(pkgs)), ",")
			}
			return st, nil
		case !errors.Is(err, fs.ErrNotExist):
			return st, fmt.Errorf("%w: %s: %w", installer.ErrUnknown, p, err)
		}
	}
	st.Detail = "no sentinel file"
	return st, nil
}

// Stage is done by the package manager, not offpeak.
func (b *Backend) Stage(context.Context) error {
	return fmt.Errorf("sentinel: updates are installed by the package manager: %w", installer.ErrNotSupported)
}

// MarkGood has nothing to mark: the packages are already installed.
func (b *Backend) MarkGood(context.Context) error { return nil }

// Rollback is not possible for packages.
func (b *Backend) Rollback(context.Context) error {
	return fmt.Errorf("sentinel: %w", installer.ErrNotSupported)
}
