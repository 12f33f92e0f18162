// Package builtin lists the lockers, health checks and installer backends
// compiled into offpeak. Each registers itself next to its code with a
// Module (see internal/registry); the lists below are the one place a new
// built-in is named. Lockers and checks are served through the plugin
// protocol by re-executing the offpeak binary (`offpeak plugin serve KIND
// NAME`); installer backends are built in the agent's process.
package builtin

import (
	"github.com/offpeak/offpeak/installer"
	"github.com/offpeak/offpeak/installer/gpt"
	"github.com/offpeak/offpeak/installer/ostree"
	"github.com/offpeak/offpeak/installer/sentinel"
	"github.com/offpeak/offpeak/installer/updateengine"
	execcheck "github.com/offpeak/offpeak/internal/checks/exec"
	httpcheck "github.com/offpeak/offpeak/internal/checks/http"
	promcheck "github.com/offpeak/offpeak/internal/checks/prometheus"
	systemdcheck "github.com/offpeak/offpeak/internal/checks/systemd"
	userscheck "github.com/offpeak/offpeak/internal/checks/users"
	"github.com/offpeak/offpeak/internal/redact"
	"github.com/offpeak/offpeak/internal/registry"
	consullocker "github.com/offpeak/offpeak/lockers/consul"
	etcdlocker "github.com/offpeak/offpeak/lockers/etcd"
	filelocker "github.com/offpeak/offpeak/lockers/file"
	fleetlocklocker "github.com/offpeak/offpeak/lockers/fleetlock"
	"github.com/offpeak/offpeak/plugins"
)

// Lockers lists the built-in lockers. One line per locker.
func Lockers() []registry.Module[plugins.Locker] {
	return []registry.Module[plugins.Locker]{
		filelocker.Module(),
		etcdlocker.Module(),
		consullocker.Module(),
		fleetlocklocker.Module(),
	}
}

// Checks lists the built-in health checks. One line per check.
func Checks() []registry.Module[plugins.HealthCheck] {
	return []registry.Module[plugins.HealthCheck]{
		execcheck.Module(),
		httpcheck.Module(),
		promcheck.Module(),
		systemdcheck.Module(),
		userscheck.Module(),
	}
}

// Installers lists the installer backends, in the order errors name them.
// One line per backend.
func Installers() []registry.Module[installer.Backend] {
	return []registry.Module[installer.Backend]{
		installer.None(),
		sentinel.Module(),
		gpt.Module(),
		updateengine.Module(),
		ostree.RPMOSTreeModule(),
		ostree.BootcModule(),
	}
}

// Registry is every built-in, by kind and name.
type Registry struct {
	Lockers    registry.Set[plugins.Locker]
	Checks     registry.Set[plugins.HealthCheck]
	Installers registry.Set[installer.Backend]
}

// New returns the registry of the lists above; each call builds its own.
func New() *Registry {
	return &Registry{
		Lockers:    registry.NewSet(Lockers()...),
		Checks:     registry.NewSet(Checks()...),
		Installers: registry.NewSet(Installers()...),
	}
}

// Schema returns a new zero settings struct of the built-in kind/name, or
// nil when there is none (a third-party plugin, whose settings pass
// unchecked).
func (r *Registry) Schema(kind registry.Kind, name string) any {
	switch kind {
	case registry.KindLocker:
		return r.Lockers.Schema(name)
	case registry.KindCheck:
		return r.Checks.Schema(name)
	case registry.KindInstaller:
		return r.Installers.Schema(name)
	}
	return nil
}

// Names lists the built-ins of kind in the order listed above.
func (r *Registry) Names(kind registry.Kind) []string {
	switch kind {
	case registry.KindLocker:
		return r.Lockers.Names()
	case registry.KindCheck:
		return r.Checks.Names()
	case registry.KindInstaller:
		return r.Installers.Names()
	}
	return nil
}

// SecretKeys returns the keys the built-in's settings schema declares
// secret (nil for a third-party plugin, whose settings are redacted by name
// and shape only).
func (r *Registry) SecretKeys(kind registry.Kind, name string) []string {
	return redact.KeysOf(r.Schema(kind, name))
}

// PluginKinds lists the built-ins the plugin protocol serves, by kind and
// sorted, as the plugin host wants them.
func (r *Registry) PluginKinds() map[plugins.Kind][]string {
	return map[plugins.Kind][]string{
		plugins.KindLocker: r.Lockers.Sorted(),
		plugins.KindCheck:  r.Checks.Sorted(),
	}
}
