// Package checktest holds what the tests of the built-in health checks
// share: requests and a fixed clock, outcome assertions, PEM files, and the
// cases in which an HTTP server or a D-Bus service cannot answer, which
// every check must report as Outcome Error, never as a pass.
package checktest

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/offpeak/offpeak/internal/checks/checkutil"
	"github.com/offpeak/offpeak/internal/dbustest"
	"github.com/offpeak/offpeak/plugins"
)

// Now is the time the checks under test are given as their clock.
var Now = time.Date(2026, 3, 29, 2, 30, 0, 0, time.UTC)

// Clock makes b stamp results with Now.
func Clock(b *checkutil.Base) { b.Now = func() time.Time { return Now } }

// Ctx returns a context that ends after 20s or when the test ends.
func Ctx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// Request encodes cfg as the config of the check name, run in phase.
func Request(t testing.TB, name string, phase plugins.Phase, cfg any) plugins.CheckRequest {
	t.Helper()
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return plugins.CheckRequest{Name: name, Phase: phase, Node: plugins.Node{ID: "node-1", Group: "web"}, Config: b}
}

// Run runs c and fails the test when it returns an error or a result not
// stamped by Now.
func Run(t testing.TB, ctx context.Context, c plugins.HealthCheck, req plugins.CheckRequest) plugins.CheckResult {
	t.Helper()
	res, err := c.Check(ctx, req)
	if err != nil {
		t.Fatalf("Check returned error %v; want a result", err)
	}
	if !res.Time.Equal(Now) {
		t.Fatalf("result time %v, want the injected clock's %v", res.Time, Now)
	}
	return res
}

// Expect fails the test unless res has Outcome want and a reason that
// contains every part. An Outcome Error must always have a reason.
func Expect(t testing.TB, res plugins.CheckResult, want plugins.Outcome, parts ...string) {
	t.Helper()
	if res.Outcome != want {
		t.Fatalf("got %s %q, want %s", res.Outcome, res.Reason, want)
	}
	if want == plugins.Error && res.Reason == "" {
		t.Fatalf("Outcome Error without a reason: %+v", res)
	}
	for _, p := range parts {
		if !strings.Contains(res.Reason, p) {
			t.Fatalf("got %s %q, want the reason to contain %q", res.Outcome, res.Reason, p)
		}
	}
}

// InvalidArgument fails the test unless err wraps plugins.ErrInvalidArgument.
func InvalidArgument(t testing.TB, err error) {
	t.Helper()
	if !errors.Is(err, plugins.ErrInvalidArgument) {
		t.Fatalf("err = %v, want ErrInvalidArgument", err)
	}
}

// WritePEM writes der as one PEM block of type typ to a new file and
// returns its path.
func WritePEM(t testing.TB, name, typ string, der []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// CAFile writes the certificate of a TLS test server as a PEM CA file.
func CAFile(t testing.TB, srv *httptest.Server) string {
	t.Helper()
	return WritePEM(t, "ca.pem", "CERTIFICATE", srv.Certificate().Raw)
}

// Unanswered runs an HTTP-based check, through run, against a server that
// never answers, a closed port, and with a context that ended before the
// check began. Each must be Outcome Error whose reason says why; run checks
// the URL it is given with ctx.
func Unanswered(t *testing.T, run func(t *testing.T, ctx context.Context, url string) plugins.CheckResult) {
	t.Helper()
	blocking := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // answer only once the client gave up
	}))
	t.Cleanup(blocking.Close)
	closed := httptest.NewServer(http.NotFoundHandler())
	closedURL := closed.URL
	closed.Close()

	t.Run("server that never answers times out", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		defer cancel()
		res := run(t, ctx, blocking.URL)
		Expect(t, res, plugins.Error)
		if !strings.HasPrefix(res.Reason, "timed out after") {
			t.Fatalf("reason %q, want it to start with the timeout", res.Reason)
		}
	})
	t.Run("connection refused", func(t *testing.T) {
		Expect(t, run(t, t.Context(), closedURL), plugins.Error, "refused")
	})
	t.Run("canceled before the request", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		res := run(t, ctx, blocking.URL)
		Expect(t, res, plugins.Error)
		if !strings.HasPrefix(res.Reason, "canceled: ") {
			t.Fatalf("reason %q, want it to start with \"canceled: \"", res.Reason)
		}
	})
}

// BusCase is a bus on which a D-Bus check's service cannot answer.
type BusCase struct {
	Name string
	// Addr returns the bus address the check is given.
	Addr func(t *testing.T) string
	// Timeout bounds the check; 0 means the 20s of Ctx.
	Timeout time.Duration
	// Reason, when set, must be part of the result's reason.
	Reason string
}

// CannotAsk runs a D-Bus check, through run, on buses where service cannot
// answer: it is not on the bus, there is no bus, its owner never replies
// (the check's deadline must end the call), and any extra cases. Each must
// be Outcome Error with a reason, stamped by Now, and never a Go error.
func CannotAsk(t *testing.T, service string, run func(t *testing.T, ctx context.Context, bus string) (plugins.CheckResult, error), extra ...BusCase) {
	t.Helper()
	cases := append([]BusCase{
		{Name: "service not on the bus", Addr: func(t *testing.T) string { return dbustest.New(t).Addr }},
		{Name: "bus unreachable", Addr: func(t *testing.T) string { return "unix:path=" + t.TempDir() + "/nobus" }},
		{Name: "service never answers", Addr: func(t *testing.T) string {
			d := dbustest.New(t)
			Silent(t, d, service)
			return d.Addr
		}, Timeout: 300 * time.Millisecond, Reason: "timed out after"},
	}, extra...)
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			bus := tc.Addr(t)
			ctx := Ctx(t)
			if tc.Timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.Timeout)
				defer cancel()
			}
			res, err := run(t, ctx, bus)
			if err != nil {
				t.Fatalf("Check returned error %v; a D-Bus failure must be Outcome Error", err)
			}
			if !res.Time.Equal(Now) {
				t.Fatalf("result time %v, want the injected clock's %v", res.Time, Now)
			}
			if tc.Reason != "" {
				Expect(t, res, plugins.Error, tc.Reason)
			} else {
				Expect(t, res, plugins.Error)
			}
		})
	}
}

// Silent takes the name service on d with a connection that accepts every
// method call on every object and answers none of them until the test
// ends.
func Silent(t *testing.T, d *dbustest.Daemon, service string) {
	t.Helper()
	release := make(chan struct{})
	conn, err := dbus.Connect(d.Addr, dbus.WithHandler(silent{release}))
	if err != nil {
		t.Fatalf("connect to private bus: %v", err)
	}
	// Cleanups run last first: the calls are released, then the
	// connection goes.
	t.Cleanup(func() { _ = conn.Close() })
	t.Cleanup(func() { close(release) })
	if err := dbustest.RequestName(conn, service); err != nil {
		t.Fatal(err)
	}
}

// silent is a dbus.Handler whose every method blocks until release closes
// and then fails.
type silent struct{ release <-chan struct{} }

func (s silent) LookupObject(dbus.ObjectPath) (dbus.ServerObject, bool) { return s, true }
func (s silent) LookupInterface(string) (dbus.Interface, bool)          { return s, true }
func (s silent) LookupMethod(string) (dbus.Method, bool)                { return s, true }
func (s silent) NumArguments() int                                      { return 0 }
func (s silent) NumReturns() int                                        { return 0 }
func (s silent) ArgumentValue(int) any                                  { return nil }
func (s silent) ReturnValue(int) any                                    { return nil }

// DecodeArguments accepts any arguments, so any signature reaches Call.
func (s silent) DecodeArguments(*dbus.Conn, string, *dbus.Message, []any) ([]any, error) {
	return nil, nil
}

func (s silent) Call(...any) ([]any, error) {
	<-s.release
	return nil, errors.New("test over")
}
