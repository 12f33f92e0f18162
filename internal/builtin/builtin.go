// Package builtin lists the lockers and health checks compiled into offpeak.
// They are served through the plugin protocol by re-executing the offpeak
// binary (`offpeak plugin serve KIND NAME`), and used in-process only by the
// simulator.
package builtin

import (
	"log/slog"

	execcheck "github.com/offpeak/offpeak/internal/checks/exec"
	httpcheck "github.com/offpeak/offpeak/internal/checks/http"
	promcheck "github.com/offpeak/offpeak/internal/checks/prometheus"
	systemdcheck "github.com/offpeak/offpeak/internal/checks/systemd"
	userscheck "github.com/offpeak/offpeak/internal/checks/users"
	consullocker "github.com/offpeak/offpeak/lockers/consul"
	etcdlocker "github.com/offpeak/offpeak/lockers/etcd"
	filelocker "github.com/offpeak/offpeak/lockers/file"
	fleetlocklocker "github.com/offpeak/offpeak/lockers/fleetlock"
	"github.com/offpeak/offpeak/plugins"
)

// Locker describes a built-in locker.
type Locker struct {
	New func(log *slog.Logger) plugins.Locker
	// Config returns a pointer to a zero config struct (json tags) so the
	// policy validator can name unknown or mistyped keys.
	Config func() any
}

// Check describes a built-in health check.
type Check struct {
	New    func(log *slog.Logger) plugins.HealthCheck
	Config func() any
}

// Registry holds the built-ins by name.
type Registry struct {
	Lockers map[string]Locker
	Checks  map[string]Check
}

// New returns the registry of everything compiled in. Keep one line per
// built-in.
func New() *Registry {
	r := &Registry{Lockers: map[string]Locker{}, Checks: map[string]Check{}}
	r.Lockers["file"] = Locker{New: filelocker.New, Config: func() any { return &filelocker.Config{} }}
	r.Lockers["etcd"] = Locker{New: etcdlocker.New, Config: func() any { return &etcdlocker.Config{} }}
	r.Lockers["consul"] = Locker{New: consullocker.New, Config: func() any { return &consullocker.Config{} }}
	r.Lockers["fleetlock"] = Locker{New: fleetlocklocker.New, Config: func() any { return &fleetlocklocker.Config{} }}
	r.Checks["exec"] = Check{New: execcheck.New, Config: func() any { return &execcheck.Config{} }}
	r.Checks["http"] = Check{New: httpcheck.New, Config: func() any { return &httpcheck.Config{} }}
	r.Checks["prometheus"] = Check{New: promcheck.New, Config: func() any { return &promcheck.Config{} }}
	r.Checks["systemd"] = Check{New: systemdcheck.New, Config: func() any { return &systemdcheck.Config{} }}
	r.Checks["users"] = Check{New: userscheck.New, Config: func() any { return &userscheck.Config{} }}
	return r
}
