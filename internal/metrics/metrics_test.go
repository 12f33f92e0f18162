package metrics

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/offpeak/offpeak/plugins"
	"github.com/offpeak/offpeak/scheduler"
)

var t0 = time.Date(2026, 6, 2, 1, 0, 0, 0, time.UTC)

func ptr[T any](v T) *T { return &v }

// scenario is one node's way through an update: staged outside the window,
// slot taken at the window's start, reboot, post-boot checks, slot released.
func scenario() []scheduler.Result {
	staged := &scheduler.StagedInfo{State: "yes", Version: "4152.2.1", Reason: "update_engine: UPDATED_NEED_REBOOT"}
	window := ptr(t0.Add(time.Hour))
	pass := []scheduler.CheckRecord{{Name: "api", Outcome: plugins.Pass}}
	return []scheduler.Result{
		{Decision: scheduler.DecisionIdle, Phase: scheduler.PhaseIdle, NextWindow: window, Staged: &scheduler.StagedInfo{State: "no"}},
		{Decision: scheduler.DecisionWaitWindow, Phase: scheduler.PhaseIdle, NextWindow: window, Staged: staged},
		{Decision: scheduler.DecisionWaitSlot, Phase: scheduler.PhaseAcquiring, NextWindow: window, Staged: staged},
		{Decision: scheduler.DecisionReboot, Phase: scheduler.PhaseRebooting, HoldingSlot: true, NextWindow: window, Staged: staged, Checks: pass},
		{Decision: scheduler.DecisionReboot, Phase: scheduler.PhaseRebooting, HoldingSlot: true, NextWindow: window, Staged: staged, Checks: pass},
		{Decision: scheduler.DecisionPostBoot, Phase: scheduler.PhasePostBoot, HoldingSlot: true, NextWindow: window, Staged: &scheduler.StagedInfo{State: "no"}, Checks: pass},
		{Decision: scheduler.DecisionIdle, Phase: scheduler.PhaseIdle, NextWindow: ptr(t0.Add(25 * time.Hour)), Staged: &scheduler.StagedInfo{State: "no"},
			Checks: []scheduler.CheckRecord{{Name: "api", Outcome: plugins.Pass}, {Name: "disk", Outcome: plugins.Fail}}},
	}
}

// series parses an exposition into "name{labels}" -> value.
func series(t *testing.T, body string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad sample line %q", line)
		}
		out[line[:i]] = v
	}
	return out
}

func get(t *testing.T, c *http.Client, url string) string {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s: %s", url, resp.Status, b)
	}
	return string(b)
}

func serve(t *testing.T, m *Metrics, addr string) *Server {
	t.Helper()
	s, err := Serve(addr, m.Handler(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			t.Error(err)
		}
	})
	return s
}

// expectation is what a scrape must show after one Result.
type expectation map[string]float64

func scenarioExpectations() []expectation {
	return []expectation{
		{`offpeak_phase{phase="idle"}`: 1, `offpeak_phase{phase="rebooting"}`: 0, `offpeak_decision{decision="idle"}`: 1,
			`offpeak_slot_held`: 0, `offpeak_next_window_seconds`: 3600, `offpeak_reboots_total`: 0},
		{`offpeak_decision{decision="wait-window"}`: 1, `offpeak_decision{decision="idle"}`: 0, `offpeak_staged_info{version="4152.2.1"}`: 1},
		{`offpeak_phase{phase="acquiring"}`: 1, `offpeak_phase{phase="idle"}`: 0, `offpeak_decision{decision="wait-slot"}`: 1},
		{`offpeak_phase{phase="rebooting"}`: 1, `offpeak_slot_held`: 1, `offpeak_reboots_total`: 1,
			`offpeak_check_result{name="api",outcome="pass"}`: 1, `offpeak_check_result{name="api",outcome="fail"}`: 0},
		{`offpeak_phase{phase="rebooting"}`: 1, `offpeak_reboots_total`: 1},
		{`offpeak_phase{phase="post-boot"}`: 1, `offpeak_phase{phase="rebooting"}`: 0, `offpeak_decision{decision="post-boot"}`: 1},
		{`offpeak_phase{phase="idle"}`: 1, `offpeak_slot_held`: 0, `offpeak_reboots_total`: 1, `offpeak_next_window_seconds`: 25 * 3600,
			`offpeak_check_result{name="disk",outcome="fail"}`: 1},
	}
}

func TestScrapeFollowsTheScenario(t *testing.T) {
	m := New(func() time.Time { return t0 })
	s := serve(t, m, "127.0.0.1:0")
	url := "http://" + s.Addr().String() + "/metrics"
	// Before the first decision nothing is known about the next window.
	if got := series(t, get(t, http.DefaultClient, url)); hasKey(got, "offpeak_next_window_seconds") {
		t.Fatal("offpeak_next_window_seconds exported before any decision")
	}
	results, want := scenario(), scenarioExpectations()
	for i, r := range results {
		m.Observe(r)
		got := series(t, get(t, http.DefaultClient, url))
		for k, v := range want[i] {
			if g, ok := got[k]; !ok || g != v {
				t.Errorf("step %d (%s/%s): %s = %v (present %v), want %v", i, r.Decision, r.Phase, k, g, ok, v)
			}
		}
		if present := hasKey(got, `offpeak_staged_info{version="4152.2.1"}`); present != (r.Staged.State == "yes") {
			t.Errorf("step %d: offpeak_staged_info present=%v with staged=%s", i, present, r.Staged.State)
		}
	}
}

func hasKey(m map[string]float64, k string) bool { _, ok := m[k]; return ok }

// The acceptance check: `curl` of the endpoint while a scenario runs shows
// the phase changing.
func TestCurlShowsPhaseChanging(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl not installed (Debian: apt-get install curl)")
	}
	m := New(func() time.Time { return t0 })
	s := serve(t, m, "127.0.0.1:0")
	url := "http://" + s.Addr().String() + "/metrics"
	var seen []string
	for _, r := range scenario() {
		m.Observe(r)
		out, err := exec.Command(curl, "--silent", "--show-error", "--fail", "--max-time", "10", url).Output()
		if err != nil {
			t.Fatalf("curl %s: %v", url, err)
		}
		var current []string
		for k, v := range series(t, string(out)) {
			if p, ok := strings.CutPrefix(k, `offpeak_phase{phase="`); ok && v == 1 {
				current = append(current, strings.TrimSuffix(p, `"}`))
			}
		}
		t.Logf("after %s/%s: curl shows offpeak_phase{phase=%q} 1", r.Decision, r.Phase, strings.Join(current, ","))
		if len(current) != 1 || current[0] != string(r.Phase) {
			t.Fatalf("curl shows phase %v, want exactly [%s]\n%s", current, r.Phase, out)
		}
		if len(seen) == 0 || seen[len(seen)-1] != current[0] {
			seen = append(seen, current[0])
		}
	}
	want := []string{"idle", "acquiring", "rebooting", "post-boot", "idle"}
	if strings.Join(seen, ",") != strings.Join(want, ",") {
		t.Fatalf("phases seen through curl %v, want %v", seen, want)
	}
}

func TestServeOnUnixSocket(t *testing.T) {
	m := New(nil)
	m.Observe(scheduler.Result{Decision: scheduler.DecisionIdle, Phase: scheduler.PhaseHolding})
	path := filepath.Join(t.TempDir(), "metrics.sock")
	serve(t, m, "unix:"+path)
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", path)
	}}}
	got := series(t, get(t, c, "http://offpeak/metrics"))
	if got[`offpeak_phase{phase="holding"}`] != 1 {
		t.Fatalf("phase holding not reported over the unix socket: %v", got)
	}
	if !hasKey(got, "go_goroutines") || !hasKey(got, "process_resident_memory_bytes") {
		t.Fatal("runtime and process collectors missing")
	}
}

func TestListenReplacesStaleSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "metrics.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	// A crashed agent leaves its socket file behind.
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	ln2, err := Listen("unix:" + path)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	ln2.Close()
	if _, err := Listen("unix:"); err == nil {
		t.Fatal("empty unix path accepted")
	}
}

func TestRebootsCountedOncePerReboot(t *testing.T) {
	rebooting := scheduler.Result{Decision: scheduler.DecisionReboot, Phase: scheduler.PhaseRebooting}
	tests := []struct {
		name   string
		seed   scheduler.Phase
		events []scheduler.Result
		want   float64
	}{
		{"one reboot, several passes", "", []scheduler.Result{rebooting, rebooting, rebooting}, 1},
		{"two reboots", "", []scheduler.Result{rebooting, {Phase: scheduler.PhasePostBoot}, {Phase: scheduler.PhaseIdle}, rebooting}, 2},
		{"dry run", "", []scheduler.Result{{Decision: scheduler.DecisionReboot, Phase: scheduler.PhaseIdle, DryRun: true}, {Phase: scheduler.PhaseRebooting, DryRun: true}}, 0},
		{"restarted while the reboot is pending", scheduler.PhaseRebooting, []scheduler.Result{rebooting}, 0},
		{"restarted holding a slot", scheduler.PhaseHolding, []scheduler.Result{rebooting}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := New(nil)
			m.Seed(tt.seed)
			for _, r := range tt.events {
				m.Observe(r)
			}
			if got := gather(t, m)["offpeak_reboots_total"]; got != tt.want {
				t.Fatalf("offpeak_reboots_total = %v, want %v", got, tt.want)
			}
		})
	}
}

func gather(t *testing.T, m *Metrics) map[string]float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /metrics: %d: %s", rec.Code, rec.Body)
	}
	return series(t, rec.Body.String())
}

func TestPluginRestarts(t *testing.T) {
	m := New(nil)
	if got := gather(t, m); hasKey(got, `offpeak_plugin_restarts_total{plugin="etcd"}`) {
		t.Fatal("restarts exported without a source")
	}
	counts := map[string]int{"etcd": 2, "http": 0}
	m.SetPluginRestarts(func() map[string]int { return counts })
	got := gather(t, m)
	if got[`offpeak_plugin_restarts_total{plugin="etcd"}`] != 2 || !hasKey(got, `offpeak_plugin_restarts_total{plugin="http"}`) {
		t.Fatalf("restarts: %v", got)
	}
}

// stubLocker answers from fields; Wait blocks until its context ends.
type stubLocker struct {
	acquireErr error
	clock      *steppingClock
}

func (s *stubLocker) Acquire(context.Context, plugins.AcquireRequest) (plugins.AcquireResult, error) {
	s.clock.step(250 * time.Millisecond)
	return plugins.AcquireResult{}, s.acquireErr
}
func (s *stubLocker) Release(context.Context, plugins.ReleaseRequest) error { return nil }
func (s *stubLocker) Status(context.Context, string) (plugins.LockState, error) {
	s.clock.step(20 * time.Millisecond)
	return plugins.LockState{}, nil
}
func (s *stubLocker) Wait(ctx context.Context, _ string, _ uint64) (plugins.LockState, error) {
	<-ctx.Done()
	return plugins.LockState{}, ctx.Err()
}
func (s *stubLocker) Freeze(context.Context, plugins.FreezeRequest) error {
	return errors.New("frozen solid")
}

// steppingClock moves only when the locker under test "takes time".
type steppingClock struct{ now time.Time }

func (c *steppingClock) step(d time.Duration) { c.now = c.now.Add(d) }

func TestLockerWrapperRecordsLatencyAndErrors(t *testing.T) {
	clock := &steppingClock{now: t0}
	m := New(func() time.Time { return clock.now })
	if m.WrapLocker(nil) != nil {
		t.Fatal("nil locker wrapped into a non-nil one")
	}
	l := m.WrapLocker(&stubLocker{acquireErr: plugins.ErrUnavailable, clock: clock})
	ctx := context.Background()
	if _, err := l.Acquire(ctx, plugins.AcquireRequest{}); !errors.Is(err, plugins.ErrUnavailable) {
		t.Fatalf("Acquire error %v not passed through", err)
	}
	for range 3 {
		if _, err := l.Status(ctx, "web"); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Freeze(ctx, plugins.FreezeRequest{}); err == nil {
		t.Fatal("Freeze error swallowed")
	}
	wctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := l.Wait(wctx, "web", 1); !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	got := gather(t, m)
	tests := []struct {
		series string
		want   float64
	}{
		{`offpeak_locker_request_duration_seconds_count{method="acquire"}`, 1},
		{`offpeak_locker_request_duration_seconds_sum{method="acquire"}`, 0.25},
		{`offpeak_locker_request_duration_seconds_bucket{method="acquire",le="0.1"}`, 0},
		{`offpeak_locker_request_duration_seconds_bucket{method="acquire",le="0.25"}`, 1},
		{`offpeak_locker_request_duration_seconds_count{method="status"}`, 3},
		{`offpeak_locker_request_duration_seconds_count{method="wait"}`, 1},
		{`offpeak_locker_errors_total{method="acquire"}`, 1},
		{`offpeak_locker_errors_total{method="freeze"}`, 1},
		{`offpeak_locker_errors_total{method="status"}`, 0},
		{`offpeak_locker_errors_total{method="wait"}`, 0},
	}
	for _, tt := range tests {
		t.Run(tt.series, func(t *testing.T) {
			if g, ok := got[tt.series]; !ok || g != tt.want {
				t.Fatalf("%s = %v (present %v), want %v", tt.series, g, ok, tt.want)
			}
		})
	}
}

// Series of a check that is no longer run, or of a version no longer
// staged, disappear; the others show only the last result.
func TestCheckAndStagedSeriesFollowTheLastResult(t *testing.T) {
	m := New(nil)
	staged := func(v string) *scheduler.StagedInfo { return &scheduler.StagedInfo{State: "yes", Version: v} }
	steps := []struct {
		r       scheduler.Result
		want    map[string]float64
		missing []string
	}{
		{
			scheduler.Result{Phase: scheduler.PhaseIdle, Staged: staged("1.0"), Checks: []scheduler.CheckRecord{{Name: "api", Outcome: plugins.Fail}, {Name: "disk", Outcome: plugins.Pass}}},
			map[string]float64{
				`offpeak_staged_info{version="1.0"}`:               1,
				`offpeak_check_result{name="api",outcome="fail"}`:  1,
				`offpeak_check_result{name="api",outcome="pass"}`:  0,
				`offpeak_check_result{name="api",outcome="error"}`: 0,
				`offpeak_check_result{name="disk",outcome="pass"}`: 1,
			},
			nil,
		},
		{
			scheduler.Result{Phase: scheduler.PhaseIdle, Staged: staged("1.1"), Checks: []scheduler.CheckRecord{{Name: "api", Outcome: plugins.Pass}}},
			map[string]float64{
				`offpeak_staged_info{version="1.1"}`:              1,
				`offpeak_check_result{name="api",outcome="fail"}`: 0,
				`offpeak_check_result{name="api",outcome="pass"}`: 1,
			},
			[]string{`offpeak_staged_info{version="1.0"}`, `offpeak_check_result{name="disk",outcome="pass"}`},
		},
		{
			scheduler.Result{Phase: scheduler.PhaseIdle, Staged: &scheduler.StagedInfo{State: "no"}},
			map[string]float64{},
			[]string{`offpeak_staged_info{version="1.1"}`, `offpeak_check_result{name="api",outcome="pass"}`},
		},
	}
	for i, s := range steps {
		m.Observe(s.r)
		got := gather(t, m)
		for k, v := range s.want {
			if g, ok := got[k]; !ok || g != v {
				t.Errorf("step %d: %s = %v (present %v), want %v", i, k, g, ok, v)
			}
		}
		for _, k := range s.missing {
			if hasKey(got, k) {
				t.Errorf("step %d: %s still exported", i, k)
			}
		}
	}
}

// A node id collision is its own series, so an alert can name it.
func TestNodeIDCollisionMetric(t *testing.T) {
	m := New(func() time.Time { return t0 })
	s := serve(t, m, "127.0.0.1:0")
	url := "http://" + s.Addr().String() + "/metrics"
	for _, c := range []struct {
		collision bool
		want      float64
	}{{false, 0}, {true, 1}, {false, 0}} {
		m.Observe(scheduler.Result{Decision: scheduler.DecisionBlocked, Phase: scheduler.PhaseIdle, NodeIDCollision: c.collision})
		if got := series(t, get(t, http.DefaultClient, url))["offpeak_node_id_collision"]; got != c.want {
			t.Fatalf("offpeak_node_id_collision = %v with collision %v", got, c.collision)
		}
	}
}
