// Package users is the built-in "users" health check: it fails while
// someone is logged in interactively, so a reboot does not cut off a person
// at a console or in an SSH session.
package users

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/offpeak/offpeak/internal/checks/checkutil"
	"github.com/offpeak/offpeak/internal/httpx"
	"github.com/offpeak/offpeak/internal/logind"
	"github.com/offpeak/offpeak/internal/registry"
	"github.com/offpeak/offpeak/plugins"
)

// Config is the check's [health.config] table.
type Config struct {
	// Allow lists user names whose sessions never block (automation
	// accounts, e.g. "core" used by a provisioning tool).
	Allow []string `json:"allow,omitempty"`
	// IncludeRemote counts remote (SSH) sessions; default true.
	IncludeRemote *bool `json:"include_remote,omitempty"`
	// Bus is a D-Bus address to use instead of the system bus (tests).
	Bus string `json:"bus,omitempty"`
}

// SecretKeys: the users check has no secret settings.
func (Config) SecretKeys() []string { return nil }

// Check implements plugins.HealthCheck.
type Check struct {
	checkutil.Base
}

// New returns the check.
func New(log *slog.Logger) plugins.HealthCheck {
	return &Check{Base: checkutil.NewBase(log)}
}

// Module registers the users health check with offpeak's built-ins.
func Module() registry.Module[plugins.HealthCheck] {
	return registry.Module[plugins.HealthCheck]{Name: "users", Config: func() any { return &Config{} }, New: registry.Logged(New)}
}

// Check lists logind sessions. It fails while an interactive session of a
// user not in Allow exists; it is Outcome Error when logind cannot answer.
func (c *Check) Check(ctx context.Context, req plugins.CheckRequest) (plugins.CheckResult, error) {
	var cfg Config
	if err := plugins.DecodeConfig(req.Config, &cfg); err != nil {
		return plugins.CheckResult{}, fmt.Errorf("users check: %w", err)
	}
	started := time.Now()
	return c.Done(ctx, "users", req.Name, started, c.run(ctx, &cfg, started)), nil
}

func (c *Check) run(ctx context.Context, cfg *Config, started time.Time) plugins.CheckResult {
	conn, err := checkutil.ConnectBus(ctx, cfg.Bus)
	if err != nil {
		return c.Result(plugins.Error, "cannot connect to the system bus: "+httpx.ErrText(ctx, started, err), nil)
	}
	defer conn.Close()
	sessions, err := logind.New(conn).ListSessions(ctx)
	if err != nil {
		return c.Result(plugins.Error, "cannot list login sessions: "+httpx.ErrText(ctx, started, err), nil)
	}

	includeRemote := cfg.IncludeRemote == nil || *cfg.IncludeRemote
	var blocking []string
	details := map[string]string{}
	for _, s := range sessions {
		if !Interactive(s, includeRemote) || slices.Contains(cfg.Allow, s.User) {
			continue
		}
		desc := describe(s)
		blocking = append(blocking, desc)
		details["session "+s.ID] = desc
	}
	if len(blocking) > 0 {
		return c.Result(plugins.Fail, "interactive sessions: "+strings.Join(blocking, ", "), details)
	}
	return c.Result(plugins.Pass, fmt.Sprintf("no interactive sessions (%d session(s) ignored)", len(sessions)), nil)
}

// Interactive reports whether a session is a person at a terminal: class
// "user" (or one of logind's user-* variants) that is not closing, on a
// TTY or seat, or remote (when includeRemote). Manager, greeter,
// lock-screen and background sessions never count.
func Interactive(s logind.Session, includeRemote bool) bool {
	if s.Class != "user" && !strings.HasPrefix(s.Class, "user-") {
		return false
	}
	if s.State == "closing" {
		// Logged out; only lingering processes are left.
		return false
	}
	if s.Remote {
		return includeRemote
	}
	return s.TTY != "" || s.Seat != ""
}

func describe(s logind.Session) string {
	where := s.TTY
	if where == "" {
		where = s.Seat
	}
	if where == "" {
		where = "session " + s.ID
	}
	d := s.User + " on " + where
	if s.Remote && s.RemoteHost != "" {
		d += " from " + s.RemoteHost
	}
	return d
}
