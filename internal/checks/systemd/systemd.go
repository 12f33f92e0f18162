// Package systemd is the built-in "systemd" health check: it passes when
// every configured unit is active, asking systemd over D-Bus.
package systemd

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/offpeak/offpeak/internal/checks/checkutil"
	"github.com/offpeak/offpeak/internal/httpx"
	"github.com/offpeak/offpeak/internal/registry"
	"github.com/offpeak/offpeak/plugins"
)

// Config is the check's [health.config] table.
type Config struct {
	// Units must all have ActiveState "active", e.g. ["kubelet.service"].
	Units []string `json:"units"`
	// Bus is a D-Bus address to use instead of the system bus (tests).
	Bus string `json:"bus,omitempty"`
}

// SecretKeys: the systemd check has no secret settings.
func (Config) SecretKeys() []string { return nil }

// Check implements plugins.HealthCheck.
type Check struct {
	checkutil.Base
}

// New returns the check.
func New(log *slog.Logger) plugins.HealthCheck {
	return &Check{Base: checkutil.NewBase(log)}
}

// Module registers the systemd health check with offpeak's built-ins.
func Module() registry.Module[plugins.HealthCheck] {
	return registry.Module[plugins.HealthCheck]{Name: "systemd", Config: func() any { return &Config{} }, New: registry.Logged(New)}
}

// systemd's D-Bus names for the one call the check makes.
const (
	busName          = "org.freedesktop.systemd1"
	objectPath       = dbus.ObjectPath("/org/freedesktop/systemd1")
	listUnitsByNames = "org.freedesktop.systemd1.Manager.ListUnitsByNames"
)

// unitStatus is one (ssssssouso) entry of ListUnitsByNames.
type unitStatus struct {
	Name, Description, LoadState, ActiveState, SubState, Followed string
	Path                                                          dbus.ObjectPath
	JobID                                                         uint32
	JobType                                                       string
	JobPath                                                       dbus.ObjectPath
}

// Check reads the units' states. A unit that is not active fails the check;
// not being able to ask systemd is Outcome Error.
func (c *Check) Check(ctx context.Context, req plugins.CheckRequest) (plugins.CheckResult, error) {
	var cfg Config
	if err := plugins.DecodeConfig(req.Config, &cfg); err != nil {
		return plugins.CheckResult{}, fmt.Errorf("systemd check: %w", err)
	}
	if len(cfg.Units) == 0 {
		return plugins.CheckResult{}, fmt.Errorf("%w: systemd check: \"units\" must name at least one unit", plugins.ErrInvalidArgument)
	}
	for _, u := range cfg.Units {
		if strings.TrimSpace(u) == "" {
			return plugins.CheckResult{}, fmt.Errorf("%w: systemd check: empty unit name", plugins.ErrInvalidArgument)
		}
	}
	started := time.Now()
	return c.Done(ctx, "systemd", req.Name, started, c.run(ctx, &cfg, started)), nil
}

func (c *Check) run(ctx context.Context, cfg *Config, started time.Time) plugins.CheckResult {
	conn, err := checkutil.ConnectBus(ctx, cfg.Bus)
	if err != nil {
		return c.Result(plugins.Error, "cannot connect to systemd: "+httpx.ErrText(ctx, started, err), nil)
	}
	defer conn.Close()
	var states []unitStatus
	err = conn.Object(busName, objectPath).CallWithContext(ctx, listUnitsByNames, 0, cfg.Units).Store(&states)
	if err != nil {
		return c.Result(plugins.Error, "cannot read unit states from systemd: "+httpx.ErrText(ctx, started, err), nil)
	}
	byName := make(map[string]unitStatus, len(states))
	for _, s := range states {
		byName[s.Name] = s
	}

	details := make(map[string]string, len(cfg.Units))
	var bad []string
	for i, unit := range cfg.Units {
		// systemd answers one entry per requested name, in order; the
		// entry's Name is the unit's primary name, which differs when an
		// alias was requested.
		s, ok := byName[unit]
		if !ok && len(states) == len(cfg.Units) {
			s, ok = states[i], true
		}
		if !ok {
			details[unit] = "missing"
			bad = append(bad, unit+" is missing from systemd's answer")
			continue
		}
		details[unit] = s.ActiveState
		if s.ActiveState != "active" {
			bad = append(bad, fmt.Sprintf("%s is %s (load %s, sub %s)", unit, s.ActiveState, s.LoadState, s.SubState))
		}
	}
	if len(bad) > 0 {
		return c.Result(plugins.Fail, strings.Join(bad, "; "), details)
	}
	return c.Result(plugins.Pass, fmt.Sprintf("%d unit(s) active: %s", len(cfg.Units), strings.Join(cfg.Units, ", ")), details)
}
