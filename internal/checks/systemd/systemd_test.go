package systemd_test

import (
	"cmp"
	"context"
	"encoding/json"
	"sync"
	"testing"

	"github.com/godbus/dbus/v5"

	"github.com/offpeak/offpeak/internal/checks/checktest"
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
}

func (f *fakeSystemd) ListUnitsByNames(names []string) ([]unitStatus, *dbus.Error) {
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

func newCheck() *systemd.Check {
	c := systemd.New(nil).(*systemd.Check)
	checktest.Clock(&c.Base)
	return c
}

func request(t *testing.T, cfg map[string]any) plugins.CheckRequest {
	t.Helper()
	return checktest.Request(t, "units", plugins.PhasePostBoot, cfg)
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
			res := checktest.Run(t, checktest.Ctx(t), newCheck(), request(t, map[string]any{"units": tt.units, "bus": d.Addr}))
			checktest.Expect(t, res, tt.want, tt.reasonParts...)
			for _, u := range tt.units {
				want := "inactive" // systemd's answer for an unknown name
				if st, ok := f.units[cmp.Or(f.alias[u], u)]; ok {
					want = st[1]
				}
				if got, ok := res.Details[u]; !ok || got != want {
					t.Fatalf("details %v: unit %s is %q, want %q", res.Details, u, got, want)
				}
			}
		})
	}
}

func TestCannotAskSystemdIsOutcomeError(t *testing.T) {
	checktest.CannotAsk(t, "org.freedesktop.systemd1", func(t *testing.T, ctx context.Context, bus string) (plugins.CheckResult, error) {
		return newCheck().Check(ctx, request(t, map[string]any{"units": []string{"a.service"}, "bus": bus}))
	}, checktest.BusCase{Name: "systemd refuses", Addr: func(t *testing.T) string {
		return startSystemd(t, &fakeSystemd{err: dbus.NewError("org.freedesktop.DBus.Error.AccessDenied", []any{"denied"})}).Addr
	}, Reason: "cannot read unit states from systemd: denied"})
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
			_, err := newCheck().Check(checktest.Ctx(t), plugins.CheckRequest{Config: json.RawMessage(tt.cfg)})
			checktest.InvalidArgument(t, err)
		})
	}
}
