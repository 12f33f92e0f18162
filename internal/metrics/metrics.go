// Package metrics exposes the agent's decisions as Prometheus metrics on a
// registry of its own (never the global one), fed by the scheduler's
// Observer hook, plus a Locker wrapper that times every locker call.
package metrics

import (
	"math"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/offpeak/offpeak/plugins"
	"github.com/offpeak/offpeak/scheduler"
)

// Known label values are exported as 0 from the start, so a query sees the
// whole set and a change is one sample flipping.
var (
	phases = []scheduler.Phase{scheduler.PhaseIdle, scheduler.PhaseAcquiring, scheduler.PhaseHolding,
		scheduler.PhaseRebooting, scheduler.PhasePostBoot, scheduler.PhaseFailed}
	decisions = []scheduler.Decision{scheduler.DecisionIdle, scheduler.DecisionWaitWindow, scheduler.DecisionWaitSlot,
		scheduler.DecisionWaitHealth, scheduler.DecisionReboot, scheduler.DecisionPostBoot, scheduler.DecisionBlocked}
	outcomes = []plugins.Outcome{plugins.Pass, plugins.Fail, plugins.Error}
)

// Metrics holds the agent's metrics. It is a scheduler.Observer.
type Metrics struct {
	reg *prometheus.Registry
	now func() time.Time

	phase    *prometheus.GaugeVec
	decision *prometheus.GaugeVec
	slotHeld prometheus.Gauge
	idClash  prometheus.Gauge
	staged   *prometheus.GaugeVec
	reboots  prometheus.Counter
	checks   *prometheus.GaugeVec
	lockDur  *prometheus.HistogramVec
	lockErrs *prometheus.CounterVec

	nextWindowDesc *prometheus.Desc
	restartsDesc   *prometheus.Desc
	lockerUpDesc   *prometheus.Desc

	mu             sync.Mutex
	phaseValues    []scheduler.Phase
	decisionValues []scheduler.Decision
	lastPhase      scheduler.Phase
	nextWindow     *time.Time
	stagedVer      *string
	checkNames     map[string]bool
	restarts       func() map[string]int
	lockerUp       *bool // nil until the first locker call
}

// New registers offpeak's metrics, plus the Go runtime and process
// collectors, on a fresh registry. now is the clock for
// offpeak_next_window_seconds and locker latencies (nil: time.Now).
func New(now func() time.Time) *Metrics {
	if now == nil {
		now = time.Now
	}
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		now: now,
		phase: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "offpeak_phase", Help: "1 for the agent's current phase, 0 for the others.",
		}, []string{"phase"}),
		decision: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "offpeak_decision", Help: "1 for the last decision of the pipeline, 0 for the others.",
		}, []string{"decision"}),
		slotHeld: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "offpeak_slot_held", Help: "1 while this node holds a reboot slot of its group.",
		}),
		idClash: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "offpeak_node_id_collision",
			Help: "1 while the locker finds this node's id held by another machine (cloned machine ids); nothing reboots until fixed.",
		}),
		staged: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "offpeak_staged_info", Help: "1, labelled with the version, while an update waits for a reboot.",
		}, []string{"version"}),
		reboots: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "offpeak_reboots_total", Help: "Reboots this agent asked for (dry runs excluded).",
		}),
		checks: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "offpeak_check_result", Help: "1 for the last outcome of each health check, 0 for the other outcomes.",
		}, []string{"name", "outcome"}),
		lockDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "offpeak_locker_request_duration_seconds", Help: "Duration of locker calls by method.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"method"}),
		lockErrs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "offpeak_locker_errors_total", Help: "Locker calls that failed, by method.",
		}, []string{"method"}),
		nextWindowDesc: prometheus.NewDesc("offpeak_next_window_seconds",
			"Seconds until a reboot may next begin (0 inside a window); absent when no window is ahead.", nil, nil),
		restartsDesc: prometheus.NewDesc("offpeak_plugin_restarts_total",
			"Times a plugin process was started again after a failure.", []string{"plugin"}, nil),
		lockerUpDesc: prometheus.NewDesc("offpeak_locker_up",
			"1 when the last locker call got an answer from the lock service, 0 when it could not reach it; absent before the first call.", nil, nil),
		checkNames: map[string]bool{},
	}
	m.phaseValues = slices.Clone(phases)
	m.decisionValues = slices.Clone(decisions)
	for _, p := range phases {
		m.phase.WithLabelValues(string(p))
	}
	for _, d := range decisions {
		m.decision.WithLabelValues(string(d))
	}
	for _, method := range lockerMethods {
		m.lockDur.WithLabelValues(method)
		m.lockErrs.WithLabelValues(method)
	}
	m.reg.MustRegister(m.phase, m.decision, m.slotHeld, m.idClash, m.staged, m.reboots, m.checks, m.lockDur, m.lockErrs,
		dynamic{m}, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Registry returns the registry, for tests and extra collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the registry in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Seed tells the metrics the phase persisted before this process started,
// so an agent restarted while its reboot is pending does not count that
// reboot again.
func (m *Metrics) Seed(phase scheduler.Phase) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.lastPhase == "" {
		m.lastPhase = phase
	}
}

// SetPluginRestarts names the source of offpeak_plugin_restarts_total,
// e.g. pluginhost.Manager.Restarts. The plugin manager is built after the
// metrics, so this is set later than New.
func (m *Metrics) SetPluginRestarts(f func() map[string]int) {
	m.mu.Lock()
	m.restarts = f
	m.mu.Unlock()
}

// Observe records one decision.
func (m *Metrics) Observe(r scheduler.Result) {
	m.mu.Lock()
	defer m.mu.Unlock()
	setOne(m.phase, &m.phaseValues, r.Phase)
	setOne(m.decision, &m.decisionValues, r.Decision)
	m.slotHeld.Set(b2f(r.HoldingSlot))
	m.idClash.Set(b2f(r.NodeIDCollision))
	// Count on the transition into "rebooting": later passes that wait for
	// the reboot to happen stay in that phase and are not counted.
	if r.Phase == scheduler.PhaseRebooting && m.lastPhase != scheduler.PhaseRebooting && !r.DryRun {
		m.reboots.Inc()
	}
	m.lastPhase = r.Phase
	m.nextWindow = nil
	if r.NextWindow != nil {
		t := *r.NextWindow
		m.nextWindow = &t
	}
	var ver *string
	if r.Staged != nil && r.Staged.State == scheduler.StagedYes.String() {
		v := r.Staged.Version
		ver = &v
	}
	// The new version is set before the old one goes, so a scrape never
	// misses a staged update that merely changed version.
	if ver != nil {
		m.staged.WithLabelValues(*ver).Set(1)
	}
	if m.stagedVer != nil && (ver == nil || *ver != *m.stagedVer) {
		m.staged.DeleteLabelValues(*m.stagedVer)
	}
	m.stagedVer = ver
	seen := make(map[string]bool, len(r.Checks))
	for _, c := range r.Checks {
		seen[c.Name] = true
		// Each outcome is set once to its final value, so a scrape never
		// sees a check with no outcome at 1.
		for _, o := range outcomes {
			m.checks.WithLabelValues(c.Name, string(o)).Set(b2f(o == c.Outcome))
		}
		if !slices.Contains(outcomes, c.Outcome) {
			m.checks.WithLabelValues(c.Name, string(c.Outcome)).Set(1)
		}
	}
	for name := range m.checkNames {
		if !seen[name] {
			m.checks.DeletePartialMatch(prometheus.Labels{"name": name})
		}
	}
	m.checkNames = seen
}

// setOne sets value to 1 and every other series of v to 0, without a
// moment in which a scrape could see none at 1.
func setOne[S ~string](v *prometheus.GaugeVec, known *[]S, value S) {
	if value == "" {
		return
	}
	if !slices.Contains(*known, value) {
		*known = append(*known, value)
	}
	for _, k := range *known {
		v.WithLabelValues(string(k)).Set(b2f(k == value))
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// dynamic collects the values computed at scrape time.
type dynamic struct{ m *Metrics }

func (d dynamic) Describe(ch chan<- *prometheus.Desc) {
	ch <- d.m.nextWindowDesc
	ch <- d.m.restartsDesc
	ch <- d.m.lockerUpDesc
}

func (d dynamic) Collect(ch chan<- prometheus.Metric) {
	m := d.m
	m.mu.Lock()
	next, restarts, up := m.nextWindow, m.restarts, m.lockerUp
	m.mu.Unlock()
	if up != nil {
		ch <- prometheus.MustNewConstMetric(m.lockerUpDesc, prometheus.GaugeValue, b2f(*up))
	}
	if next != nil {
		secs := math.Max(0, next.Sub(m.now()).Seconds())
		ch <- prometheus.MustNewConstMetric(m.nextWindowDesc, prometheus.GaugeValue, secs)
	}
	if restarts != nil {
		for name, n := range restarts() {
			ch <- prometheus.MustNewConstMetric(m.restartsDesc, prometheus.CounterValue, float64(n), name)
		}
	}
}
