// Package systemd is the built-in "systemd" health check: it passes when
// every configured unit is active, asking systemd over D-Bus.
package systemd

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	sdbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"

	"github.com/offpeak/offpeak/internal/checks/checkutil"
	"github.com/offpeak/offpeak/plugins"
)

// Config is the check's [health.config] table.
type Config struct {
	// Units must all have ActiveState "active", e.g. ["kubelet.service"].
	Units []string `json:"units"`
	// Bus is a D-Bus address to use instead of the system bus (tests).
	Bus string `json:"bus,omitempty"`
}

// Check implements plugins.HealthCheck.
type Check struct {
	Log *slog.Logger
	// Now stamps results; tests replace it.
	Now func() time.Time
}

// New returns the check.
func New(log *slog.Logger) plugins.HealthCheck {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Check{Log: log, Now: time.Now}
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
	conn, err := connect(ctx, cfg.Bus)
	if err != nil {
		return c.result(plugins.Error, "cannot connect to systemd: "+errText(ctx, started, err), nil), nil
	}
	defer conn.Close()

	states, err := conn.ListUnitsByNamesContext(ctx, cfg.Units)
	if err != nil {
		return c.result(plugins.Error, "cannot read unit states from systemd: "+errText(ctx, started, err), nil), nil
	}
	byName := make(map[string]sdbus.UnitStatus, len(states))
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
		return c.result(plugins.Fail, strings.Join(bad, "; "), details), nil
	}
	return c.result(plugins.Pass, fmt.Sprintf("%d unit(s) active: %s", len(cfg.Units), strings.Join(cfg.Units, ", ")), details), nil
}

func (c *Check) result(o plugins.Outcome, reason string, details map[string]string) plugins.CheckResult {
	if len(details) == 0 {
		details = nil
	}
	return checkutil.Result(c.Now, o, reason, details)
}

func connect(ctx context.Context, addr string) (*sdbus.Conn, error) {
	if addr == "" {
		return sdbus.NewSystemConnectionContext(ctx)
	}
	return sdbus.NewConnection(func() (*dbus.Conn, error) {
		return dbus.Connect(addr, dbus.WithContext(ctx))
	})
}

// errText prefers "timed out after D" over the raw error when ctx ended.
func errText(ctx context.Context, started time.Time, err error) string {
	if r := checkutil.CtxReason(ctx, started); r != "" {
		return r
	}
	return err.Error()
}
