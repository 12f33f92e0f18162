package users_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/offpeak/offpeak/internal/checks/checktest"
	"github.com/offpeak/offpeak/internal/checks/users"
	"github.com/offpeak/offpeak/internal/dbustest"
	"github.com/offpeak/offpeak/internal/logind"
	"github.com/offpeak/offpeak/internal/logind/logindtest"
	"github.com/offpeak/offpeak/plugins"
)

func newCheck() *users.Check {
	c := users.New(nil).(*users.Check)
	checktest.Clock(&c.Base)
	return c
}

func request(t *testing.T, cfg map[string]any) plugins.CheckRequest {
	t.Helper()
	return checktest.Request(t, "users", plugins.PhasePreReboot, cfg)
}

var (
	sshAlice   = logind.Session{ID: "4", User: "alice", UID: 1000, Class: "user", Type: "tty", TTY: "pts/0", Remote: true, RemoteHost: "10.0.0.5", State: "active"}
	consoleBob = logind.Session{ID: "5", User: "bob", UID: 1001, Seat: "seat0", Class: "user", Type: "tty", TTY: "tty1", State: "active"}
	manager    = logind.Session{ID: "c1", User: "alice", UID: 1000, Class: "manager", State: "active"}
	greeter    = logind.Session{ID: "c2", User: "gdm", UID: 120, Seat: "seat0", Class: "greeter", Type: "wayland", TTY: "tty1", State: "online"}
	cron       = logind.Session{ID: "6", User: "root", Class: "background", Type: "unspecified", State: "active"}
	closing    = logind.Session{ID: "7", User: "carol", UID: 1002, Class: "user", Type: "tty", TTY: "pts/1", Remote: true, State: "closing"}
	ansible    = logind.Session{ID: "8", User: "core", UID: 500, Class: "user", Type: "tty", TTY: "pts/2", Remote: true, RemoteHost: "ci", State: "active"}
)

func TestSessions(t *testing.T) {
	d := dbustest.New(t)
	srv := logindtest.Start(t, d)
	tests := []struct {
		name        string
		sessions    []logind.Session
		cfg         map[string]any
		want        plugins.Outcome
		reasonParts []string
	}{
		{"nobody", nil, nil, plugins.Pass, nil},
		{"only non-interactive classes", []logind.Session{manager, greeter, cron, closing}, nil, plugins.Pass, nil},
		{"ssh session", []logind.Session{manager, sshAlice}, nil, plugins.Fail, []string{"alice on pts/0 from 10.0.0.5"}},
		{"console session", []logind.Session{consoleBob}, nil, plugins.Fail, []string{"bob on tty1"}},
		{"both named", []logind.Session{sshAlice, consoleBob}, nil, plugins.Fail, []string{"alice on pts/0", "bob on tty1"}},
		{"allow-listed user", []logind.Session{ansible}, map[string]any{"allow": []string{"core"}}, plugins.Pass, nil},
		{"allow-list does not hide others", []logind.Session{ansible, sshAlice}, map[string]any{"allow": []string{"core"}}, plugins.Fail, []string{"alice"}},
		{"remote excluded", []logind.Session{sshAlice}, map[string]any{"include_remote": false}, plugins.Pass, nil},
		{"remote excluded, console counts", []logind.Session{sshAlice, consoleBob}, map[string]any{"include_remote": false}, plugins.Fail, []string{"bob on tty1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv.SetSessions(t, tt.sessions)
			cfg := map[string]any{"bus": d.Addr}
			for k, v := range tt.cfg {
				cfg[k] = v
			}
			res := checktest.Run(t, checktest.Ctx(t), newCheck(), request(t, cfg))
			checktest.Expect(t, res, tt.want, tt.reasonParts...)
			if tt.cfg["allow"] != nil && strings.Contains(res.Reason, "core") {
				t.Fatalf("allow-listed user named in %q", res.Reason)
			}
		})
	}
}

func TestNoLogindIsOutcomeError(t *testing.T) {
	checktest.CannotAsk(t, logind.BusName, func(t *testing.T, ctx context.Context, bus string) (plugins.CheckResult, error) {
		return newCheck().Check(ctx, request(t, map[string]any{"bus": bus}))
	})
}

func TestBadConfigIsError(t *testing.T) {
	for _, cfg := range []string{`{"allow":"root"}`, `{"include_remote":"yes"}`, `{"alow":["x"]}`} {
		t.Run(cfg, func(t *testing.T) {
			_, err := newCheck().Check(checktest.Ctx(t), plugins.CheckRequest{Config: json.RawMessage(cfg)})
			checktest.InvalidArgument(t, err)
		})
	}
}

func TestInteractive(t *testing.T) {
	tests := []struct {
		name   string
		s      logind.Session
		remote bool
		want   bool
	}{
		{"ssh", sshAlice, true, true},
		{"ssh excluded", sshAlice, false, false},
		{"console", consoleBob, false, true},
		{"manager", manager, true, false},
		{"greeter", greeter, true, false},
		{"background", cron, true, false},
		{"closing", closing, true, false},
		{"user-early on seat", logind.Session{Class: "user-early", Seat: "seat0", State: "online"}, true, true},
		{"user without tty or seat", logind.Session{Class: "user", State: "active"}, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := users.Interactive(tt.s, tt.remote); got != tt.want {
				t.Fatalf("Interactive = %v, want %v", got, tt.want)
			}
		})
	}
}
