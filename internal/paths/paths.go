// Package paths names the files offpeak reads and writes, all below an
// optional root so tests and operators can point offpeak at another tree.
package paths

import (
	"os"
	"path/filepath"
)

// EnvRoot overrides the root directory when --root is not given.
const EnvRoot = "OFFPEAK_ROOT"

// Layout resolves offpeak's well-known paths below Root ("" or "/" is the
// real system).
type Layout struct {
	Root string
}

// FromEnv returns a Layout for root, falling back to $OFFPEAK_ROOT.
func FromEnv(root string) Layout {
	if root == "" {
		root = os.Getenv(EnvRoot)
	}
	return Layout{Root: root}
}

// Join places an absolute system path below the root. An empty path (an
// optional file left unset) stays empty rather than naming the root.
func (l Layout) Join(p string) string {
	if p == "" || l.Root == "" || l.Root == "/" {
		return p
	}
	return filepath.Join(l.Root, p)
}

func (l Layout) VendorPolicyDir() string { return l.Join("/usr/lib/offpeak/policy.d") }
func (l Layout) PolicyFile() string      { return l.Join("/etc/offpeak/policy.toml") }
func (l Layout) PolicyDir() string       { return l.Join("/etc/offpeak/policy.d") }
func (l Layout) StateDir() string        { return l.Join("/var/lib/offpeak") }
func (l Layout) StateFile() string       { return filepath.Join(l.StateDir(), "state.json") }
func (l Layout) RunDir() string          { return l.Join("/run/offpeak") }
func (l Layout) LockDir() string         { return filepath.Join(l.StateDir(), "locks") }
func (l Layout) MachineIDFile() string   { return l.Join("/etc/machine-id") }
func (l Layout) BootIDFile() string      { return l.Join("/proc/sys/kernel/random/boot_id") }

// InstallRecordDir keeps the outcome of the last install into each A/B slot
// (installer/gpt's DefaultRecordDir below the root).
func (l Layout) InstallRecordDir() string { return filepath.Join(l.StateDir(), "install") }

// PluginDirs are searched in order; a plugin in a later directory overrides
// one of the same name in an earlier one.
func (l Layout) PluginDirs() []string {
	return []string{l.Join("/usr/lib/offpeak/plugins"), l.Join("/etc/offpeak/plugins")}
}
