package users_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/offpeak/offpeak/internal/checks/users"
	"github.com/offpeak/offpeak/internal/dbustest"
	"github.com/offpeak/offpeak/internal/logind"
	"github.com/offpeak/offpeak/internal/logind/logindtest"
	"github.com/offpeak/offpeak/plugins"
)

var fixed = time.Date(2026, 10, 25, 1, 30, 0, 0, time.UTC)

func newCheck() *users.Check {
	c := users.New(nil).(*users.Check)
	c.Now = func() time.Time { return fixed }
	return c
}

func ctx(t *testing.T) context.Context {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

func request(t *testing.T, cfg map[string]any) plugins.CheckRequest {
	t.Helper()
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return plugins.CheckRequest{Name: "users", Phase: plugins.PhasePreReboot, Config: b}
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
			res, err := newCheck().Check(ctx(t), request(t, cfg))
			if err != nil {
				t.Fatalf("Check: %v", err)
			}
			if res.Outcome != tt.want {
				t.Fatalf("outcome %s (%s), want %s", res.Outcome, res.Reason, tt.want)
			}
			for _, p := range tt.reasonParts {
				if !strings.Contains(res.Reason, p) {
					t.Fatalf("reason %q does not contain %q", res.Reason, p)
				}
			}
			if tt.want == plugins.Fail && strings.Contains(res.Reason, "core") && tt.cfg["allow"] != nil {
				t.Fatalf("allow-listed user named in %q", res.Reason)
			}
			if !res.Time.Equal(fixed) {
				t.Fatalf("time = %v, want %v", res.Time, fixed)
			}
		})
	}
}

func TestNoLogindIsOutcomeError(t *testing.T) {
	tests := []struct {
		name string
		bus  func(t *testing.T) string
	}{
		{"logind not on bus", func(t *testing.T) string { return dbustest.New(t).Addr }},
		{"bus unreachable", func(t *testing.T) string { return "unix:path=" + t.TempDir() + "/nobus" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := newCheck().Check(ctx(t), request(t, map[string]any{"bus": tt.bus(t)}))
			if err != nil {
				t.Fatalf("Check returned error %v; want Outcome Error", err)
			}
			if res.Outcome != plugins.Error || res.Reason == "" {
				t.Fatalf("result %+v, want Outcome Error with a reason", res)
			}
		})
	}
}

func TestBadConfigIsError(t *testing.T) {
	for _, cfg := range []string{`{"allow":"root"}`, `{"include_remote":"yes"}`, `{"alow":["x"]}`} {
		t.Run(cfg, func(t *testing.T) {
			_, err := newCheck().Check(ctx(t), plugins.CheckRequest{Config: json.RawMessage(cfg)})
			if !errors.Is(err, plugins.ErrInvalidArgument) {
				t.Fatalf("Check = %v, want ErrInvalidArgument", err)
			}
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
