package simulate

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/offpeak/offpeak/internal/policyload"
	"github.com/offpeak/offpeak/plugins"
	"github.com/offpeak/offpeak/scheduler"
	"github.com/offpeak/offpeak/scheduler/policy"
)

func weeknights(t *testing.T) *policy.Policy {
	t.Helper()
	p, err := policyload.Load(policyload.Options{Path: "../../examples/weeknights.toml", Now: referenceDate})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// longNight is a single 6-hour nightly window: a rollout fits one night, so
// a run is spent on the rollout rather than on idle passes between windows.
func longNight(t *testing.T) *policy.Policy {
	t.Helper()
	p, err := policyload.Parse("nightly.toml", []byte(`
[node]
group = "web"
[[window]]
name = "nightly"
start = "0 1 * * *"
duration = "6h"
timezone = "Europe/Berlin"
cutoff = "30m"
`), policyload.Options{Now: referenceDate})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func mustRun(t *testing.T, cfg Config) *Report {
	t.Helper()
	r, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// failed lists the invariants that did not hold, for the failure message.
func failed(r *Report) string {
	var out []string
	for _, iv := range r.Invariants {
		if !iv.OK {
			out = append(out, iv.Name+": "+iv.Detail)
		}
	}
	return strings.Join(out, "\n")
}

func TestRolloutPacksIntoWindows(t *testing.T) {
	for _, tc := range []struct {
		locker string
		slots  int
	}{
		{"file", 3},
		{"etcd", 5},
	} {
		t.Run(tc.locker, func(t *testing.T) {
			r := mustRun(t, Config{Policy: weeknights(t), PolicyName: "weeknights.toml", Nodes: 50, Slots: tc.slots,
				RebootTime: 2 * time.Minute, Locker: tc.locker, Seed: 7})
			if r.Violations != 0 {
				t.Fatalf("%d invariant violations:\n%s", r.Violations, failed(r))
			}
			if !r.Complete || len(r.Unconfirmed) != 0 {
				t.Fatalf("complete=%v, unconfirmed %v", r.Complete, r.Unconfirmed)
			}
			if r.Reboots != 50 {
				t.Errorf("reboots = %d, want 50", r.Reboots)
			}
			if r.Ratio > 1.05 || r.Ratio < 1 {
				t.Errorf("makespan %s / ideal %s = %.3f, want within [1, 1.05]", r.Makespan, r.IdealMakespan, r.Ratio)
			}
			if got := r.MaxHolders["web"]; got != tc.slots {
				t.Errorf("watcher saw at most %d holders, want %d", got, tc.slots)
			}
			if r.WatchedRevisions < 100 {
				t.Errorf("watcher saw %d revisions, want at least one per grant and release", r.WatchedRevisions)
			}
		})
	}
}

func TestChaosKeepsInvariants(t *testing.T) {
	faults, err := ParseFaults("kill=0.1,downtime=15m,outage=30m@2,postboot-fail=0.05,thaw-after=20m,clockjump=10m@3")
	if err != nil {
		t.Fatal(err)
	}
	// A long nightly window keeps both rounds in one night, so the run is
	// spent on the rollout rather than on idle passes between windows.
	p := longNight(t)
	r := mustRun(t, Config{Policy: p, PolicyName: "nightly.toml", Nodes: 60, Groups: 2, Slots: 3,
		RebootTime: 3 * time.Minute, RebootJitter: 2 * time.Minute, Locker: "etcd", Faults: faults, Seed: 3, Rounds: 2})
	if r.Violations != 0 {
		t.Fatalf("%d invariant violations:\n%s", r.Violations, failed(r))
	}
	if !r.Complete || len(r.Unconfirmed) != 0 {
		t.Fatalf("complete=%v, unconfirmed %v", r.Complete, r.Unconfirmed)
	}
	if r.Reboots != 120 {
		t.Errorf("reboots = %d, want 120 (60 nodes, 2 rounds)", r.Reboots)
	}
	for _, phase := range killPhaseNames {
		if r.FaultsSeen.Kills[phase] == 0 {
			t.Errorf("no kill at phase %q: %v", phase, r.FaultsSeen.Kills)
		}
	}
	if r.FaultsSeen.FailedChecks == 0 || r.FaultsSeen.Thaws != r.FaultsSeen.FailedChecks {
		t.Errorf("failed checks %d, thawed %d", r.FaultsSeen.FailedChecks, r.FaultsSeen.Thaws)
	}
	if len(r.FaultsSeen.Outages) != 2 || len(r.FaultsSeen.ClockJumps) != 3 {
		t.Errorf("outages %v, clock jumps %v", r.FaultsSeen.Outages, r.FaultsSeen.ClockJumps)
	}
}

func TestBaselinePollsWithoutWatch(t *testing.T) {
	cfg := Config{Policy: weeknights(t), PolicyName: "weeknights.toml", Nodes: 30, Slots: 3,
		RebootTime: 2 * time.Minute, Locker: "file", Seed: 1}
	watch := mustRun(t, cfg)
	cfg.Baseline = BaselineFleetlockPoll
	poll := mustRun(t, cfg)
	for _, r := range []*Report{watch, poll} {
		if r.Violations != 0 || !r.Complete {
			t.Fatalf("%s: complete=%v, violations:\n%s", r.Mode, r.Complete, failed(r))
		}
	}
	if poll.Mode != BaselineFleetlockPoll || poll.PollInterval == nil {
		t.Fatalf("baseline mode %q", poll.Mode)
	}
	if poll.LockRequests.Watches != 0 {
		t.Errorf("baseline opened %d watches", poll.LockRequests.Watches)
	}
	if watch.Handoff.P50 != 0 {
		t.Errorf("watch hand-off p50 %s, want 0 in virtual time", watch.Handoff.P50)
	}
	if poll.Handoff.P50 <= 0 || poll.Ratio <= watch.Ratio {
		t.Errorf("polling hand-off p50 %s ratio %.3f, watch ratio %.3f: polling should leave slots idle",
			poll.Handoff.P50, poll.Ratio, watch.Ratio)
	}
	var out bytes.Buffer
	if err := (Comparison{Offpeak: watch, Baseline: poll}).WriteText(&out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "makespan / ideal") {
		t.Errorf("comparison lacks the ratio line:\n%s", out.String())
	}
}

func TestSameSeedSameResult(t *testing.T) {
	cfg := Config{Policy: weeknights(t), Nodes: 20, Slots: 2, RebootTime: 2 * time.Minute, RebootJitter: time.Minute,
		Locker: "file", Seed: 42, Faults: Faults{Kill: 0.2, PostBootFail: 0.1}}
	a, b := mustRun(t, cfg), mustRun(t, cfg)
	if a.Makespan != b.Makespan || a.LockRequests.Total != b.LockRequests.Total || a.AgentPasses != b.AgentPasses {
		t.Errorf("two runs with seed 42 differ: makespan %s/%s, requests %d/%d, passes %d/%d",
			a.Makespan, b.Makespan, a.LockRequests.Total, b.LockRequests.Total, a.AgentPasses, b.AgentPasses)
	}
}

// overbooking hands out slots beyond the group's count; the watcher must see
// it.
type overbooking struct{ plugins.Locker }

func (o overbooking) Acquire(ctx context.Context, req plugins.AcquireRequest) (plugins.AcquireResult, error) {
	if _, err := o.Locker.SetSlots(ctx, req.Group, req.Slots+2); err != nil {
		return plugins.AcquireResult{}, err
	}
	return o.Locker.Acquire(ctx, req)
}

// phantom grants without asking the store; every reboot is then by a node
// that holds nothing.
type phantom struct{ plugins.Locker }

func (phantom) Acquire(_ context.Context, req plugins.AcquireRequest) (plugins.AcquireResult, error) {
	return plugins.AcquireResult{Granted: true, State: plugins.LockState{Group: req.Group, Slots: req.Slots}}, nil
}

func (phantom) Release(context.Context, plugins.ReleaseRequest) error { return nil }

func TestBrokenLockerIsCaught(t *testing.T) {
	for _, tc := range []struct {
		name, locker, invariant string
		wrap                    func(plugins.Locker) plugins.Locker
	}{
		{"overbooking file", "file", "holders ≤ slots", func(l plugins.Locker) plugins.Locker { return overbooking{l} }},
		{"overbooking etcd", "etcd", "holders ≤ slots", func(l plugins.Locker) plugins.Locker { return overbooking{l} }},
		{"phantom grant file", "file", "every reboot by a slot holder", func(l plugins.Locker) plugins.Locker { return phantom{l} }},
		{"phantom grant etcd", "etcd", "every reboot by a slot holder", func(l plugins.Locker) plugins.Locker { return phantom{l} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, _, err := run(context.Background(), Config{Policy: weeknights(t), Nodes: 12, Slots: 2,
				RebootTime: 2 * time.Minute, Locker: tc.locker, Seed: 1}, func(b *backend) { b.agents = tc.wrap(b.agents) })
			if err != nil {
				t.Fatal(err)
			}
			for _, iv := range r.Invariants {
				if strings.HasPrefix(iv.Name, tc.invariant) {
					if iv.OK {
						t.Fatalf("invariant %q held: %s", iv.Name, iv.Detail)
					}
					return
				}
			}
			t.Fatalf("no invariant %q in %+v", tc.invariant, r.Invariants)
		})
	}
}

func TestParseFaults(t *testing.T) {
	for _, tc := range []struct {
		spec    string
		want    Faults
		wantErr string
	}{
		{spec: "", want: Faults{Downtime: DefaultDowntime, ThawAfter: DefaultThawAfter}},
		{spec: "kill=0.05,outage=30m@2,postboot-fail=0.02,clockjump=10m@3", want: Faults{
			Kill: 0.05, Downtime: DefaultDowntime, Outages: 2, OutageLen: 30 * time.Minute,
			PostBootFail: 0.02, ThawAfter: DefaultThawAfter, ClockJumps: 3, ClockJump: 10 * time.Minute}},
		{spec: "outage=1h,downtime=2m,thaw-after=1d", want: Faults{
			Downtime: 2 * time.Minute, Outages: 1, OutageLen: time.Hour, ThawAfter: 24 * time.Hour}},
		{spec: "kill=2", wantErr: "fraction"},
		{spec: "kill", wantErr: "KEY=VALUE"},
		{spec: "outage=30m@x", wantErr: "count"},
		{spec: "downtime=1s", wantErr: "at least"},
		{spec: "kill=0.1,kill=0.2", wantErr: "twice"},
		{spec: "meteor=1", wantErr: "unknown fault"},
	} {
		t.Run(tc.spec, func(t *testing.T) {
			got, err := ParseFaults(tc.spec)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
			again, err := ParseFaults(got.String())
			if got.Any() && (err != nil || again != got) {
				t.Fatalf("String() %q does not parse back: %+v %v", got.String(), again, err)
			}
		})
	}
}

func TestIdealMakespan(t *testing.T) {
	p, err := policyload.Parse("daily.toml", []byte(`
[[window]]
name = "daily"
start = "0 2 * * *"
duration = "2h"
cutoff = "20m"
`), policyload.Options{Now: referenceDate})
	if err != nil {
		t.Fatal(err)
	}
	cal, err := scheduler.NewCalendar(p.Windows, p.Blackouts)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 6, 1, 1, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name         string
		nodes, slots int
		want         time.Duration
	}{
		{"one cycle", 1, 1, time.Hour + 10*time.Minute},
		{"ten cycles fill the window", 10, 1, time.Hour + 100*time.Minute},
		{"eleventh cycle would start at the cutoff", 11, 1, 25*time.Hour + 10*time.Minute},
		{"slots run in parallel", 30, 3, time.Hour + 100*time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := IdealMakespan(cal, start, tc.nodes, tc.slots, 10*time.Minute)
			if !ok || got != tc.want {
				t.Fatalf("got %s (%v), want %s", got, ok, tc.want)
			}
		})
	}
}

func TestSVGTimeline(t *testing.T) {
	faults, err := ParseFaults("kill=0.2,outage=20m@1,postboot-fail=0.1,clockjump=5m@1")
	if err != nil {
		t.Fatal(err)
	}
	r := mustRun(t, Config{Policy: weeknights(t), Nodes: 20, Groups: 2, Slots: 2, RebootTime: 2 * time.Minute,
		Locker: "file", Faults: faults, Seed: 5})
	var buf bytes.Buffer
	if err := r.WriteSVG(&buf); err != nil {
		t.Fatal(err)
	}
	svg := buf.String()
	dec := xml.NewDecoder(&buf)
	for {
		if _, err := dec.Token(); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			t.Fatalf("SVG is not well-formed XML: %v", err)
		}
	}
	for _, want := range []string{"maintenance window", "web-0", "web-1", "agent killed", "clock jump", "time (UTC)", "#3b6fb6"} {
		if !strings.Contains(svg, want) {
			t.Errorf("SVG lacks %q", want)
		}
	}
}

// A thaw wakes at once the nodes blocked by the frozen group: the failed
// holder gives its slot back and a waiter takes it at the thaw instant.
func TestThawWakesBlockedWaiters(t *testing.T) {
	p := longNight(t)
	_, s, err := run(context.Background(), Config{Policy: p, Nodes: 20, Slots: 2, RebootTime: 3 * time.Minute, Locker: "file",
		Faults: Faults{PostBootFail: 0.05, ThawAfter: 20 * time.Minute}, Seed: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.failures) != 1 || s.failures[0].thawed.IsZero() {
		t.Fatalf("failures %+v, want one, thawed", s.failures)
	}
	f := s.failures[0]
	if _, ok := s.cal.Allowed(f.thawed); !ok {
		t.Fatalf("thaw at %s is outside the window", f.thawed)
	}
	var released, granted bool
	for _, c := range s.cycles {
		if c.node == f.node && c.failedAt.Equal(f.at) {
			released = c.released.Equal(f.thawed)
			if !released {
				t.Errorf("failed node released its slot at %s, want at the thaw %s", c.released, f.thawed)
			}
		}
		if c.node != f.node && c.acquired.Equal(f.thawed) {
			granted = true
		}
	}
	if !granted {
		t.Errorf("no waiter was granted a slot at the thaw %s", f.thawed)
	}
	if !s.rounds[0].end.After(f.thawed) {
		t.Fatalf("the round ended at %s, before the thaw; no waiter left to wake", s.rounds[0].end)
	}
}
