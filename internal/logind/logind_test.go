package logind_test

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/offpeak/offpeak/internal/dbustest"
	"github.com/offpeak/offpeak/internal/logind"
	"github.com/offpeak/offpeak/internal/logind/logindtest"
)

func setup(t *testing.T) (*logindtest.Server, *logind.Client) {
	t.Helper()
	d := dbustest.New(t)
	srv := logindtest.Start(t, d)
	return srv, logind.New(d.Conn(t))
}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestRebootPassesInteractiveFlag(t *testing.T) {
	for _, interactive := range []bool{false, true} {
		t.Run(map[bool]string{false: "non-interactive", true: "interactive"}[interactive], func(t *testing.T) {
			srv, c := setup(t)
			if err := c.Reboot(testCtx(t), interactive); err != nil {
				t.Fatalf("Reboot: %v", err)
			}
			if got := srv.RebootCalls(); !reflect.DeepEqual(got, []bool{interactive}) {
				t.Fatalf("Reboot calls = %v, want [%v]", got, interactive)
			}
		})
	}
}

func TestRebootSurfacesLogindError(t *testing.T) {
	tests := []struct{ name, errName string }{
		{"access denied", logind.ErrNameAccessDenied},
		{"operation in progress", logind.ErrNameOperationProgress},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, c := setup(t)
			srv.SetRebootError(tt.errName, "refused by test")
			err := c.Reboot(testCtx(t), false)
			if err == nil {
				t.Fatal("Reboot succeeded, want the D-Bus error")
			}
			if got := logind.ErrorName(err); got != tt.errName {
				t.Fatalf("error name = %q, want %q (err: %v)", got, tt.errName, err)
			}
			if logind.IsUnavailable(err) || errors.Is(err, logind.ErrUnavailable) {
				t.Fatalf("a refusal from logind must not count as unavailable: %v", err)
			}
		})
	}
}

func TestRebootWithoutLogindIsUnavailable(t *testing.T) {
	d := dbustest.New(t)
	c := logind.New(d.Conn(t))
	err := c.Reboot(testCtx(t), false)
	if !errors.Is(err, logind.ErrUnavailable) {
		t.Fatalf("Reboot with no logind on the bus: %v, want ErrUnavailable", err)
	}
}

func TestRebootOnClosedConnectionIsUnavailable(t *testing.T) {
	d := dbustest.New(t)
	logindtest.Start(t, d)
	conn, err := dbustest.Connect(context.Background(), d.Addr)
	if err != nil {
		t.Fatal(err)
	}
	c := logind.New(conn)
	conn.Close()
	if err := c.Reboot(testCtx(t), false); !errors.Is(err, logind.ErrUnavailable) {
		t.Fatalf("Reboot on a closed connection: %v, want ErrUnavailable", err)
	}
}

func TestListInhibitorsReturnsScriptedLocks(t *testing.T) {
	srv, c := setup(t)
	want := []logind.Inhibitor{
		{What: "shutdown:sleep", Who: "backup", Why: "nightly dump", Mode: "block", UID: 0, PID: 42},
		{What: "sleep", Who: "NetworkManager", Why: "suspend", Mode: "delay", UID: 0, PID: 7},
	}
	srv.SetInhibitors(want)
	got, err := c.ListInhibitors(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("ListInhibitors = %+v, want %+v", got, want)
	}
}

func TestInhibitHoldsLockUntilReleased(t *testing.T) {
	srv, c := setup(t)
	ctx := testCtx(t)
	release, err := c.Inhibit(ctx, "shutdown", "offpeak", "writing state", "delay")
	if err != nil {
		t.Fatalf("Inhibit: %v", err)
	}
	held := srv.Held()
	if len(held) != 1 || held[0].Who != "offpeak" || held[0].Mode != "delay" || held[0].What != "shutdown" {
		t.Fatalf("held after Inhibit = %+v, want one delay lock by offpeak", held)
	}
	listed, err := c.ListInhibitors(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(listed) != 1 || listed[0].Why != "writing state" {
		t.Fatalf("ListInhibitors while held = %+v", listed)
	}
	if err := release(); err != nil {
		t.Fatalf("release: %v", err)
	}
	if err := srv.WaitReleased(ctx, "offpeak"); err != nil {
		t.Fatal(err)
	}
	if err := release(); err != nil {
		t.Fatalf("second release: %v", err)
	}
}

func TestInhibitRejectedModeIsError(t *testing.T) {
	_, c := setup(t)
	if _, err := c.Inhibit(testCtx(t), "shutdown", "offpeak", "x", "sometimes"); err == nil {
		t.Fatal("Inhibit with an invalid mode succeeded")
	}
}

func TestListSessionsReadsSessionProperties(t *testing.T) {
	srv, c := setup(t)
	want := []logind.Session{
		{ID: "3", User: "alice", UID: 1000, Class: "user", Type: "tty", TTY: "pts/0", Remote: true, RemoteHost: "10.0.0.5", State: "active"},
		{ID: "c1", User: "gdm", UID: 120, Seat: "seat0", Class: "greeter", Type: "wayland", TTY: "tty1", State: "online"},
	}
	srv.SetSessions(t, want)
	srv.AddVanishedSession("9")
	got, err := c.ListSessions(testCtx(t))
	if err != nil {
		t.Fatalf("ListSessions: %v", err)
	}
	for i := range got {
		got[i].Path = ""
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("ListSessions =\n%+v\nwant\n%+v", got, want)
	}
}

// badLogind answers with the wrong signatures.
type badLogind struct{}

func (badLogind) ListInhibitors() ([]string, *dbus.Error) { return []string{"x"}, nil }
func (badLogind) ListSessions() (int32, *dbus.Error)      { return 7, nil }
func (badLogind) Inhibit(what, who, why, mode string) (string, *dbus.Error) {
	return "not an fd", nil
}

// numericLogind answers with numbers where strings belong, which godbus
// would happily convert into strings.
type numericLogind struct{}

type sixNumbers struct{ A, B, C, D, E, F uint32 }
type fiveNumbers struct{ A, B, C, D, E uint32 }

func (numericLogind) ListInhibitors() ([]sixNumbers, *dbus.Error) {
	return []sixNumbers{{65, 66, 67, 68, 1, 2}}, nil
}
func (numericLogind) ListSessions() ([]fiveNumbers, *dbus.Error) {
	return []fiveNumbers{{65, 1, 66, 67, 68}}, nil
}

func TestBadRepliesAreClearErrors(t *testing.T) {
	ctx := testCtx(t)
	tests := []struct {
		name    string
		service any
		call    func(c *logind.Client) error
	}{
		{"ListInhibitors wrong type", badLogind{}, func(c *logind.Client) error { _, err := c.ListInhibitors(ctx); return err }},
		{"ListSessions wrong type", badLogind{}, func(c *logind.Client) error { _, err := c.ListSessions(ctx); return err }},
		{"Inhibit without fd", badLogind{}, func(c *logind.Client) error {
			_, err := c.Inhibit(ctx, "shutdown", "a", "b", "block")
			return err
		}},
		{"ListInhibitors numbers for strings", numericLogind{}, func(c *logind.Client) error { _, err := c.ListInhibitors(ctx); return err }},
		{"ListSessions numbers for strings", numericLogind{}, func(c *logind.Client) error { _, err := c.ListSessions(ctx); return err }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := dbustest.New(t)
			d.Serve(t, logind.BusName, logind.ObjectPath, logind.ManagerInterface, tt.service)
			err := tt.call(logind.New(d.Conn(t)))
			if !errors.Is(err, logind.ErrBadReply) {
				t.Fatalf("%s with a malformed reply: %v, want ErrBadReply", tt.name, err)
			}
		})
	}
}

func TestInhibitorInhibits(t *testing.T) {
	tests := []struct {
		what, query string
		want        bool
	}{
		{"shutdown", "shutdown", true},
		{"sleep:shutdown:idle", "shutdown", true},
		{"sleep", "shutdown", false},
		{"handle-power-key", "shutdown", false},
	}
	for _, tt := range tests {
		t.Run(tt.what, func(t *testing.T) {
			if got := (logind.Inhibitor{What: tt.what}).Inhibits(tt.query); got != tt.want {
				t.Fatalf("Inhibits(%q) on %q = %v, want %v", tt.query, tt.what, got, tt.want)
			}
		})
	}
}
