package systemd_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/offpeak/offpeak/internal/checks/systemd"
	"github.com/offpeak/offpeak/internal/dbustest"
	"github.com/offpeak/offpeak/plugins"
)

// unitStatus is systemd's (ssssssouso) unit record.
type unitStatus struct {
	Name, Description, LoadState, ActiveState, SubState, Followed string
	Path                                                          dbus.ObjectPath
	JobID                                                         uint32
	JobType                                                       string
	JobPath                                                       dbus.ObjectPath
}

// fakeSystemd exports org.freedesktop.systemd1.Manager.ListUnitsByNames.
type fakeSystemd struct {
	mu    sync.Mutex
	units map[string][3]string // name -> load, active, sub
	alias map[string]string    // requested name -> primary name
	err   *dbus.Error
	hang  chan struct{} // when set, calls wait for it to close
}

func (f *fakeSystemd) ListUnitsByNames(names []string) ([]unitStatus, *dbus.Error) {
	if f.hang != nil {
		<-f.hang
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	out := make([]unitStatus, 0, len(names))
	for _, n := range names {
		name := n
		if p, ok := f.alias[n]; ok {
			name = p
		}
		st, ok := f.units[name]
		if !ok {
			// systemd reports unknown names as not-found, inactive, dead.
			st = [3]string{"not-found", "inactive", "dead"}
		}
		out = append(out, unitStatus{
			Name: name, Description: name, LoadState: st[0], ActiveState: st[1], SubState: st[2],
			Path: dbus.ObjectPath("/org/freedesktop/systemd1/unit/u"), JobPath: "/",
		})
	}
	return out, nil
}

func startSystemd(t *testing.T, f *fakeSystemd) *dbustest.Daemon {
	t.Helper()
	d := dbustest.New(t)
	d.Serve(t, "org.freedesktop.systemd1", "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager", f)
	return d
}

var fixed = time.Date(2026, 3, 29, 2, 30, 0, 0, time.UTC)

func newCheck() *systemd.Check {
	c := systemd.New(nil).(*systemd.Check)
	c.Now = func() time.Time { return fixed }
	return c
}

func request(t *testing.T, cfg map[string]any) plugins.CheckRequest {
	t.Helper()
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return plugins.CheckRequest{Name: "units", Phase: plugins.PhasePostBoot, Config: b}
}

func ctx(t *testing.T) context.Context {
	t.Helper()
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestUnitStates(t *testing.T) {
	f := &fakeSystemd{
		units: map[string][3]string{
			"kubelet.service":    {"loaded", "active", "running"},
			"containerd.service": {"loaded", "active", "running"},
			"nginx.service":      {"loaded", "failed", "failed"},
			"backup.service":     {"loaded", "activating", "start"},
		},
		alias: map[string]string{"docker-runtime.service": "containerd.service"},
	}
	d := startSystemd(t, f)
	tests := []struct {
		name        string
		units       []string
		want        plugins.Outcome
		reasonParts []string
	}{
		{"all active", []string{"kubelet.service", "containerd.service"}, plugins.Pass, []string{"2 unit(s) active"}},
		{"alias of active unit", []string{"docker-runtime.service"}, plugins.Pass, nil},
		{"one failed", []string{"kubelet.service", "nginx.service"}, plugins.Fail,
			[]string{"nginx.service is failed (load loaded, sub failed)"}},
		{"not found", []string{"missing.service"}, plugins.Fail,
			[]string{"missing.service is inactive (load not-found, sub dead)"}},
		{"activating is not active", []string{"backup.service"}, plugins.Fail, []string{"backup.service is activating"}},
		{"two bad named", []string{"nginx.service", "missing.service"}, plugins.Fail,
			[]string{"nginx.service is failed", "missing.service is inactive"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := newCheck().Check(ctx(t), request(t, map[string]any{"units": tt.units, "bus": d.Addr}))
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
			if !res.Time.Equal(fixed) {
				t.Fatalf("time = %v, want the injected clock's %v", res.Time, fixed)
			}
			for _, u := range tt.units {
				if _, ok := res.Details[u]; !ok {
					t.Fatalf("details %v lack unit %s", res.Details, u)
				}
			}
		})
	}
}

func TestCannotAskSystemdIsOutcomeError(t *testing.T) {
	tests := []struct {
		name string
		bus  func(t *testing.T) string
	}{
		{"systemd not on bus", func(t *testing.T) string { return dbustest.New(t).Addr }},
		{"systemd refuses", func(t *testing.T) string {
			return startSystemd(t, &fakeSystemd{err: dbus.NewError("org.freedesktop.DBus.Error.AccessDenied", []any{"denied"})}).Addr
		}},
		{"bus unreachable", func(t *testing.T) string { return "unix:path=" + t.TempDir() + "/nobus" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := newCheck().Check(ctx(t), request(t, map[string]any{"units": []string{"a.service"}, "bus": tt.bus(t)}))
			if err != nil {
				t.Fatalf("Check returned error %v; a D-Bus failure must be Outcome Error", err)
			}
			if res.Outcome != plugins.Error {
				t.Fatalf("outcome %s (%s), want error", res.Outcome, res.Reason)
			}
			if res.Reason == "" || !res.Time.Equal(fixed) {
				t.Fatalf("result lacks reason or time: %+v", res)
			}
		})
	}
}

func TestBadConfigIsError(t *testing.T) {
	tests := []struct {
		name string
		cfg  string
	}{
		{"no units", `{}`},
		{"empty units", `{"units":[]}`},
		{"blank unit", `{"units":[" "]}`},
		{"unknown key", `{"units":["a.service"],"unit":"b"}`},
		{"wrong type", `{"units":"a.service"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := newCheck().Check(ctx(t), plugins.CheckRequest{Config: json.RawMessage(tt.cfg)})
			if !errors.Is(err, plugins.ErrInvalidArgument) {
				t.Fatalf("Check = %v, want ErrInvalidArgument", err)
			}
		})
	}
}

func TestHangingSystemdTimesOut(t *testing.T) {
	f := &fakeSystemd{hang: make(chan struct{})}
	d := startSystemd(t, f)
	t.Cleanup(func() { close(f.hang) })
	c, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	res, err := newCheck().Check(c, request(t, map[string]any{"units": []string{"a.service"}, "bus": d.Addr}))
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	if res.Outcome != plugins.Error || !strings.Contains(res.Reason, "timed out after") {
		t.Fatalf("result %+v, want Outcome Error naming the timeout", res)
	}
}
