// Package simulate runs a fleet of real scheduler agents against a real
// locker in one process, on virtual time, to measure how a rollout packs into
// the maintenance windows and to try to break the reliability invariants.
//
// It is a discrete-event simulation on one goroutine: every node has its own
// fake clock, its own in-memory state store and its own adapters (detector,
// rebooter, health checks, a counting locker wrapper); a min-heap orders the
// events (agent passes, boots, kills, restarts, operator actions, clock
// jumps) by virtual time and sequence number, so a seed gives one result.
// A freed slot, or a thaw, wakes the nodes of the group waiting for it at
// the same instant, as a watch does for the real agent; in the FleetLock-poll
// baseline nothing wakes them and they ask again at their poll interval.
package simulate

import (
	"cmp"
	"container/heap"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/offpeak/offpeak/plugins"
	"github.com/offpeak/offpeak/scheduler"
	"github.com/offpeak/offpeak/scheduler/policy"
	"github.com/offpeak/offpeak/strategies"
)

// BaselineFleetlockPoll is the baseline mode: FleetLock clients polling an
// offpeak FleetLock server, no watch.
const BaselineFleetlockPoll = "fleetlock-poll"

// DefaultPollInterval is how often a FleetLock client asks again (zincati's
// five minutes).
const DefaultPollInterval = 5 * time.Minute

// referenceDate anchors the default start so that runs are reproducible:
// the simulation starts an hour before the first window after it.
var referenceDate = time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)

// Config describes one simulation run.
type Config struct {
	Policy *policy.Policy
	// PolicyName is shown in the report.
	PolicyName   string
	Nodes        int
	Groups       int
	Slots        int // per group; 0 takes the policy's
	RebootTime   time.Duration
	RebootJitter time.Duration
	Locker       string // file | etcd
	Baseline     string // "" | BaselineFleetlockPoll
	PollInterval time.Duration
	From         time.Time // zero: an hour before the first window after 2026-06-01
	Until        time.Time // zero: long enough for every round
	Faults       Faults
	Seed         uint64
	Rounds       int
	Logger       *slog.Logger
}

func (c *Config) normalise() error {
	if c.Policy == nil {
		return errors.New("no policy")
	}
	if c.Nodes < 1 {
		return errors.New("--nodes must be at least 1")
	}
	if c.Groups < 1 {
		c.Groups = 1
	}
	if c.Groups > c.Nodes {
		return fmt.Errorf("--groups %d is more than --nodes %d", c.Groups, c.Nodes)
	}
	if c.Slots == 0 {
		c.Slots = max(c.Policy.Lock.Slots, 1)
	}
	if c.Slots < 1 {
		return errors.New("--slots must be at least 1")
	}
	if c.RebootTime <= 0 {
		return errors.New("--reboot-time must be positive")
	}
	if c.RebootJitter < 0 {
		return errors.New("--reboot-jitter must not be negative")
	}
	if c.Locker == "" {
		c.Locker = "file"
	}
	if c.Locker != "file" && c.Locker != "etcd" {
		return fmt.Errorf("--locker must be file or etcd, not %q", c.Locker)
	}
	if c.Baseline != "" && c.Baseline != BaselineFleetlockPoll {
		return fmt.Errorf("--baseline must be %s, not %q", BaselineFleetlockPoll, c.Baseline)
	}
	if c.PollInterval <= 0 {
		c.PollInterval = DefaultPollInterval
	}
	if c.Rounds < 1 {
		c.Rounds = 1
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Faults.Downtime <= 0 {
		c.Faults.Downtime = DefaultDowntime
	}
	if c.Faults.ThawAfter <= 0 {
		c.Faults.ThawAfter = DefaultThawAfter
	}
	return nil
}

type evKind uint8

const (
	evStep evKind = iota
	evBoot
	evRestart
	evKill
	evOperator
	evClockJump
)

type event struct {
	at   time.Time
	seq  uint64
	kind evKind
	node int
	gen  uint64
	dur  time.Duration
}

type eventQueue []event

func (q eventQueue) Len() int { return len(q) }
func (q eventQueue) Less(i, j int) bool {
	if c := q[i].at.Compare(q[j].at); c != 0 {
		return c < 0
	}
	return q[i].seq < q[j].seq
}
func (q eventQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *eventQueue) Push(x any)   { *q = append(*q, x.(event)) }
func (q *eventQueue) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}

// span is a period of virtual time.
type span struct{ from, to time.Time }

// cycle is one slot tenure: from the grant to the release.
type cycle struct {
	node, group, lane, round int
	acquired                 time.Time
	rebootAt, bootAt         time.Time
	failedAt                 time.Time
	released                 time.Time
}

type rebootRec struct {
	at       time.Time
	node     int
	round    int
	inWindow bool
	window   time.Time // start of the window it began in
	probe    holderProbe
}

type killRec struct {
	at    time.Time
	node  int
	phase int
	round int
}

type failRec struct {
	at, thawed time.Time
	node       int
}

type pendingRelease struct {
	at, until time.Time
}

type roundStat struct {
	start, end time.Time
	ideal      time.Duration
	reboots    int
	confirmed  int
}

type sim struct {
	ctx   context.Context
	cfg   Config
	log   *slog.Logger
	rng   *rand.Rand
	be    *backend
	cal   *scheduler.Calendar
	gates strategies.Gates
	until time.Time
	cycle time.Duration // reboot time (mean jitter) plus post-boot grace

	groupNames []string
	groupPols  []*policy.Policy
	groupNodes [][]*node
	nodes      []*node

	q   eventQueue
	seq uint64
	now time.Time

	round  int
	rounds []roundStat
	done   bool

	outages []span
	jumps   []span

	// changed lists the groups whose lock state changed during the event;
	// touched those whose state an event may have written.
	changed   []bool
	touched   []bool
	changedAt []time.Time
	// frozen is each group's freeze state, as the last freeze or thaw left it.
	frozen   []bool
	stepping *node

	lanes      [][]*node
	pendingRel [][]pendingRelease

	reboots          []rebootRec
	cycles           []*cycle
	kills            []killRec
	failures         []failRec
	handoffs         []time.Duration
	missedHandoffs   int
	idleRequests     int
	outageRefusals   int
	laneOverflow     int
	steps            int
	watches          int
	duplicateReboots int
	operatorErrs     []string
}

// Run simulates the rollout and returns its report.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	rep, _, err := run(ctx, cfg, nil)
	return rep, err
}

// run is Run with a hook that may replace the locker the agents use, so
// tests can check that a broken locker is caught, and the finished
// simulation for tests to inspect.
func run(ctx context.Context, cfg Config, wrap func(*backend)) (*Report, *sim, error) {
	if err := cfg.normalise(); err != nil {
		return nil, nil, err
	}
	wallStart := time.Now()
	s, err := newSim(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	be, err := newBackend(ctx, cfg.Locker, cfg.Baseline, cfg.Slots, cfg.Logger)
	if err != nil {
		return nil, nil, err
	}
	defer be.close()
	if wrap != nil {
		wrap(be)
	}
	s.be = be
	if err := s.run(); err != nil {
		return nil, nil, err
	}
	if err := be.settle(ctx); err != nil {
		return nil, nil, fmt.Errorf("independent watcher: %w", err)
	}
	return s.report(time.Since(wallStart)), s, nil
}

func newSim(ctx context.Context, cfg Config) (*sim, error) {
	cal, err := scheduler.NewCalendar(cfg.Policy.Windows, cfg.Policy.Blackouts)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	gates, err := strategies.Lookup(cfg.Policy.Strategy)
	if err != nil {
		return nil, err
	}
	if !gates.Lock {
		return nil, fmt.Errorf("strategy %q takes no slot; the simulation needs a strategy with a lock (window, etcd-lock, best-effort)", cfg.Policy.Strategy)
	}
	s := &sim{
		ctx: ctx, cfg: cfg, log: cfg.Logger, cal: cal, gates: gates,
		rng:   rand.New(rand.NewPCG(cfg.Seed, 0x6f66667065616b)),
		cycle: cfg.RebootTime + cfg.RebootJitter/2 + cfg.Policy.PostBoot.Grace.D(),
	}
	if cfg.From.IsZero() {
		at, ok := cal.NextStart(referenceDate)
		if !ok {
			at = referenceDate.Add(time.Hour)
		}
		cfg.From = at.Add(-time.Hour).UTC()
		s.cfg.From = cfg.From
	}
	s.now = cfg.From

	base := *cfg.Policy
	base.Lock.Slots = cfg.Slots
	base.Health = append(slices.Clone(cfg.Policy.Health),
		policy.Health{Name: "simulated-pre-reboot", Plugin: "simulator", Phase: policy.PhasePreReboot,
			Timeout: policy.Duration(30 * time.Second), Interval: policy.Duration(10 * time.Second), OnError: policy.OnErrorFail},
		policy.Health{Name: "simulated-post-boot", Plugin: "simulator", Phase: policy.PhasePostBoot,
			Timeout: policy.Duration(30 * time.Second), Interval: policy.Duration(10 * time.Second), OnError: policy.OnErrorFail})
	if cfg.Baseline == BaselineFleetlockPoll {
		base.Agent.Interval = policy.Duration(cfg.PollInterval)
	}
	groupBase := cmp.Or(base.Node.Group, "default")
	for g := range cfg.Groups {
		name := groupBase
		if cfg.Groups > 1 {
			name = fmt.Sprintf("%s-%d", groupBase, g)
		}
		p := base
		p.Node.Group = name
		s.groupNames = append(s.groupNames, name)
		s.groupPols = append(s.groupPols, &p)
	}
	s.groupNodes = make([][]*node, cfg.Groups)
	s.lanes = make([][]*node, cfg.Groups)
	s.pendingRel = make([][]pendingRelease, cfg.Groups)
	s.changed = make([]bool, cfg.Groups)
	s.touched = make([]bool, cfg.Groups)
	s.changedAt = make([]time.Time, cfg.Groups)
	s.frozen = make([]bool, cfg.Groups)
	for g := range s.lanes {
		s.lanes[g] = make([]*node, cfg.Slots)
	}
	width := len(fmt.Sprint(cfg.Nodes - 1))
	for i := range cfg.Nodes {
		n := &node{idx: i, id: fmt.Sprintf("node-%0*d", width, i), group: i % cfg.Groups,
			clock: scheduler.NewFakeClock(cfg.From), lastPhase: scheduler.PhaseIdle}
		n.clock.SetAutoAdvance(true)
		s.nodes = append(s.nodes, n)
		s.groupNodes[n.group] = append(s.groupNodes[n.group], n)
	}

	ideal1, _ := s.ideal(cfg.From)
	// Window faults land in the windows the rollout is expected to use.
	horizon := time.Duration(cfg.Rounds) * ideal1
	s.until = cfg.Until
	if s.until.IsZero() {
		s.until = cfg.From.Add(time.Duration(cfg.Rounds) * max(7*24*time.Hour, 3*ideal1))
	}
	s.planWindowFaults(horizon)
	return s, nil
}

// planWindowFaults places outages and clock jumps at random moments inside
// the windows the rollout is expected to use.
func (s *sim) planWindowFaults(horizon time.Duration) {
	f := s.cfg.Faults
	if f.Outages == 0 && f.ClockJumps == 0 {
		return
	}
	var ws []scheduler.Window
	for w := range s.cal.Windows(s.cfg.From) {
		if w.Start.After(s.cfg.From.Add(horizon)) && len(ws) > 0 {
			break
		}
		ws = append(ws, w)
		if len(ws) > 1000 {
			break
		}
	}
	if len(ws) == 0 {
		return
	}
	pick := func() time.Time {
		w := ws[s.rng.IntN(len(ws))]
		d := w.RebootUntil.Sub(w.Start)
		return w.Start.Add(time.Duration(s.rng.Int64N(int64(d)))).UTC().Truncate(time.Second)
	}
	for range f.Outages {
		at := pick()
		s.outages = append(s.outages, span{from: at, to: at.Add(f.OutageLen)})
	}
	slices.SortFunc(s.outages, func(a, b span) int { return a.from.Compare(b.from) })
	for range f.ClockJumps {
		s.push(event{at: pick(), kind: evClockJump, dur: f.ClockJump})
	}
}

// ideal is the makespan of a perfect scheduler from start: every group's
// slots run back to back, a cycle beginning only where a reboot may begin.
func (s *sim) ideal(start time.Time) (time.Duration, bool) {
	per := (s.cfg.Nodes + s.cfg.Groups - 1) / s.cfg.Groups
	return IdealMakespan(s.cal, start, per, s.cfg.Slots, s.cycle)
}

// IdealMakespan packs ceil(nodes/slots) cycles greedily into the calendar:
// a cycle may begin at t only when the calendar allows a reboot at t.
func IdealMakespan(cal *scheduler.Calendar, start time.Time, nodes, slots int, cycle time.Duration) (time.Duration, bool) {
	cycles := (nodes + slots - 1) / slots
	t := start
	for range cycles {
		at, ok := cal.NextStart(t)
		if !ok {
			return 0, false
		}
		t = at.Add(cycle)
	}
	return t.Sub(start), true
}

func (s *sim) push(ev event) {
	s.seq++
	ev.seq = s.seq
	heap.Push(&s.q, ev)
}

// schedule replaces the node's pending pass with one at at.
func (s *sim) schedule(n *node, at time.Time) {
	n.gen++
	n.pending, n.pendingAt = true, at
	s.push(event{at: at, kind: evStep, node: n.idx, gen: n.gen})
}

func (s *sim) cancel(n *node) {
	n.gen++
	n.pending = false
}

func (s *sim) run() error {
	s.startRound(s.cfg.From)
	interval := s.groupPols[0].Agent.Interval.D()
	for _, n := range s.nodes {
		s.newAgent(n)
		// The agents were already running; each notices the staged update
		// at its own next pass.
		var off time.Duration
		if interval > 0 {
			off = time.Duration(s.rng.Int64N(int64(interval)))
		}
		s.schedule(n, s.cfg.From.Add(off).Truncate(time.Second))
	}
	for s.q.Len() > 0 && !s.done {
		if err := s.ctx.Err(); err != nil {
			return err
		}
		ev := heap.Pop(&s.q).(event)
		if ev.at.After(s.until) {
			break
		}
		s.now = ev.at
		n := (*node)(nil)
		if ev.kind != evClockJump {
			n = s.nodes[ev.node]
		}
		switch ev.kind {
		case evStep:
			if ev.gen == n.gen {
				s.stepNode(n)
			}
		case evBoot:
			s.bootNode(n)
		case evRestart:
			s.restartNode(n)
		case evKill:
			s.killEvent(n)
		case evOperator:
			s.operator(n)
		case evClockJump:
			s.clockJump(ev.dur)
		}
	}
	return nil
}

func (s *sim) newAgent(n *node) {
	inst := &instance{}
	n.inst = inst
	n.starts++
	a, err := scheduler.New(scheduler.Options{
		Policy:   s.groupPols[n.group],
		NodeID:   n.id,
		Hostname: n.id,
		BootID:   func() (string, error) { return fmt.Sprintf("%s-boot-%d", n.id, n.boot), nil },
		Clock:    n.clock,
		Locker:   nodeLocker{s: s, n: n, inst: inst},
		Checks: func(string) (scheduler.HealthCheck, error) {
			return nodeCheck{s: s, n: n, inst: inst}, nil
		},
		Detector: nodeDetector{s: s, n: n},
		Rebooter: nodeRebooter{s: s, n: n, inst: inst},
		Store:    nodeStore{n: n, inst: inst},
		Rand:     rand.New(rand.NewPCG(s.cfg.Seed, uint64(n.idx)<<20|n.starts)),
	})
	if err != nil {
		// The state is written by the agent itself; failing to read it back
		// is a resume failure, reported as such.
		s.operatorErrs = append(s.operatorErrs, fmt.Sprintf("%s: agent did not start from its state: %v", n.id, err))
		n.agent = nil
		n.status = statusDead
		return
	}
	n.agent = a
	n.status = statusUp
}

// stepNode runs one pass of the node's agent at the current virtual time.
func (s *sim) stepNode(n *node) {
	if n.status != statusUp || n.agent == nil {
		return
	}
	t := s.now
	if c := n.clock.Now(); c.After(t) {
		t = c
	}
	n.clock.Set(t)
	n.pending = false
	s.stepping = n
	r, err := n.agent.Step(s.ctx)
	s.stepping = nil
	s.steps++
	if n.inst.dead {
		s.afterKill(n)
		s.afterEvent(n)
		return
	}
	if err != nil && s.ctx.Err() == nil {
		s.log.Debug("pass failed", "node", n.id, "err", err)
	}
	n.lastDecision, n.lastPhase = r.Decision, r.Phase
	n.lastFrozen = r.Lock != nil && r.Lock.Frozen
	n.watch = scheduler.Watches(r)
	if n.watch && s.cfg.Baseline == "" {
		// The agent loop opens a watch after such a pass.
		n.requests++
		s.watches++
	}
	if n.status == statusRebooting {
		s.afterEvent(n)
		return
	}
	if n.bootedRound == s.round && n.confirmedRound < s.round && r.Phase == scheduler.PhaseIdle {
		s.confirm(n)
	}
	if !s.done {
		s.schedule(n, n.agent.NextWake(n.clock.Now(), r))
	}
	s.afterEvent(n)
}

// afterEvent lets the watcher look at the groups that changed and wakes the
// nodes watching there whose watch filter lets the change through.
func (s *sim) afterEvent(n *node) {
	for g, t := range s.touched {
		if t {
			s.touched[g] = false
			s.be.observe(s.groupNames[g])
		}
	}
	for g, ch := range s.changed {
		if !ch {
			continue
		}
		s.changed[g] = false
		if s.cfg.Baseline != "" || s.done {
			continue
		}
		st := s.lockState(g)
		at := s.changedAt[g]
		if at.Before(s.now) {
			at = s.now
		}
		for _, w := range s.groupNodes[g] {
			if w == n || w.status != statusUp || !w.watch {
				continue
			}
			// The agent loop's wake rule: a grant that fills the last
			// slot wakes nobody.
			if !scheduler.Wakes(st, w.id, w.lastFrozen) {
				continue
			}
			if w.pending && !w.pendingAt.After(at) {
				continue
			}
			s.schedule(w, at)
		}
	}
}

func (s *sim) onChanged(g int, at time.Time) {
	s.changed[g] = true
	s.changedAt[g] = at
}

// onFreezeChanged records a freeze or thaw of group g.
func (s *sim) onFreezeChanged(g int, at time.Time, frozen bool) {
	s.onChanged(g, at)
	s.frozen[g] = frozen
}

// lockState is group g as the agents' watch reads it: frozen or not, the
// slot count, and as holders the nodes the simulator saw granted a slot.
func (s *sim) lockState(g int) plugins.LockState {
	st := plugins.LockState{Group: s.groupNames[g], Slots: s.cfg.Slots, Frozen: s.frozen[g]}
	for _, n := range s.groupNodes[g] {
		if n.cycle != nil {
			st.Holders = append(st.Holders, plugins.Holder{ID: n.id})
		}
	}
	return st
}

func (s *sim) nodeByID(id string) *node {
	for _, n := range s.nodes {
		if n.id == id {
			return n
		}
	}
	return nil
}

func (s *sim) onGranted(n *node) {
	now := n.clock.Now()
	s.onChanged(n.group, now)
	if n.cycle != nil {
		return // an idempotent re-grant of the slot the node holds
	}
	lanes := s.lanes[n.group]
	lane := slices.Index(lanes, nil)
	if lane < 0 {
		s.laneOverflow++
		lane = len(lanes)
	} else {
		lanes[lane] = n
	}
	c := &cycle{node: n.idx, group: n.group, lane: lane, round: s.round, acquired: now}
	n.cycle = c
	s.cycles = append(s.cycles, c)
	// Pair the grant with the oldest release still waiting for a taker.
	pend := s.pendingRel[n.group]
	for len(pend) > 0 && !pend[0].until.After(now) {
		s.missedHandoffs++
		pend = pend[1:]
	}
	if len(pend) > 0 {
		s.handoffs = append(s.handoffs, now.Sub(pend[0].at))
		pend = pend[1:]
	}
	s.pendingRel[n.group] = pend
}

func (s *sim) onReleased(n *node) {
	now := n.clock.Now()
	s.onChanged(n.group, now)
	s.closeCycle(n, now)
	w, ok := s.cal.Allowed(now)
	if !ok {
		return
	}
	// A hand-off is due when more nodes wait than releases already wait
	// for a taker.
	waiting := 0
	for _, o := range s.groupNodes[n.group] {
		if o != n && o.status == statusUp && o.lastDecision == scheduler.DecisionWaitSlot && o.staged {
			waiting++
		}
	}
	if waiting > len(s.pendingRel[n.group]) {
		s.pendingRel[n.group] = append(s.pendingRel[n.group], pendingRelease{at: now, until: w.RebootUntil})
	}
}

func (s *sim) onReclaimed(id string) {
	if o := s.nodeByID(id); o != nil {
		s.onChanged(o.group, s.now)
		s.closeCycle(o, s.now)
	}
}

func (s *sim) closeCycle(n *node, at time.Time) {
	c := n.cycle
	if c == nil {
		return
	}
	c.released = at
	if c.lane < len(s.lanes[n.group]) && s.lanes[n.group][c.lane] == n {
		s.lanes[n.group][c.lane] = nil
	}
	n.cycle = nil
}

func (s *sim) onReboot(n *node, inst *instance) {
	now := n.clock.Now()
	rec := rebootRec{at: now, node: n.idx, round: s.round, inWindow: true,
		probe: s.be.probe(s.groupNames[n.group], n.id)}
	if w, ok := s.cal.Current(now); ok {
		rec.window = w.Start
	}
	if s.gates.Window {
		_, rec.inWindow = s.cal.Allowed(now)
	}
	s.reboots = append(s.reboots, rec)
	s.rounds[s.round-1].reboots++
	n.rebootsInRound++
	if n.rebootsInRound > 1 {
		s.duplicateReboots++
	}
	if n.cycle != nil {
		n.cycle.rebootAt = now
	}
	n.status = statusRebooting
	s.cancel(n)
	boot := now.Add(s.cfg.RebootTime)
	if j := s.cfg.RebootJitter; j > 0 {
		boot = boot.Add(time.Duration(s.rng.Int64N(int64(j) + 1)))
	}
	s.push(event{at: boot, kind: evBoot, node: n.idx})
	if n.killPhase == killMidReboot && s.killDue(n) {
		s.killInStep(n, inst, killMidReboot)
	}
}

func (s *sim) onCheckFailed(n *node, at time.Time) {
	s.failures = append(s.failures, failRec{at: at, node: n.idx})
	if n.cycle != nil {
		n.cycle.failedAt = at
	}
	s.push(event{at: at.Add(s.cfg.Faults.ThawAfter), kind: evOperator, node: n.idx})
}

// operator fixes a node whose post-boot check failed and thaws its group;
// the node's own next pass then finds its checks passing and gives the slot
// back.
func (s *sim) operator(n *node) {
	n.fixed = true
	group := s.groupNames[n.group]
	if err := s.be.direct.Thaw(s.ctx, group); err != nil {
		s.operatorErrs = append(s.operatorErrs, fmt.Sprintf("thaw %s: %v", group, err))
		s.push(event{at: s.now.Add(5 * time.Minute), kind: evOperator, node: n.idx})
		return
	}
	for i := len(s.failures) - 1; i >= 0; i-- {
		if s.failures[i].node == n.idx && s.failures[i].thawed.IsZero() {
			s.failures[i].thawed = s.now
			break
		}
	}
	s.touched[n.group] = true
	s.onFreezeChanged(n.group, s.now, false)
	s.afterEvent(nil)
}

func (s *sim) killDue(n *node) bool {
	return n.killRound == s.round && !n.killDone
}

// killInStep kills the agent in the middle of a pass: whatever it does
// after this point has no effect, and what it persisted stays.
func (s *sim) killInStep(n *node, inst *instance, phase int) {
	inst.dead = true
	n.killDone = true
	n.deadUntil = n.clock.Now().Add(s.downtime())
	s.kills = append(s.kills, killRec{at: n.clock.Now(), node: n.idx, phase: phase, round: s.round})
}

func (s *sim) downtime() time.Duration {
	lo, hi := minDowntime, s.cfg.Faults.Downtime
	return (lo + time.Duration(s.rng.Int64N(int64(hi-lo)+1))).Truncate(time.Second)
}

func (s *sim) afterKill(n *node) {
	n.agent = nil
	s.cancel(n)
	if n.status == statusRebooting {
		return // the boot event brings it back
	}
	n.status = statusDead
	s.push(event{at: n.deadUntil, kind: evRestart, node: n.idx})
}

// killEvent kills an agent between passes, at a random moment.
func (s *sim) killEvent(n *node) {
	if !s.killDue(n) {
		return
	}
	switch n.status {
	case statusUp:
		n.inst.dead = true
		n.killDone = true
		n.deadUntil = s.now.Add(s.downtime())
		s.kills = append(s.kills, killRec{at: s.now, node: n.idx, phase: killRandom, round: s.round})
		s.afterKill(n)
	case statusRebooting:
		n.killDone = true
		n.deadUntil = s.now.Add(s.downtime())
		s.kills = append(s.kills, killRec{at: s.now, node: n.idx, phase: killMidReboot, round: s.round})
	}
}

func (s *sim) bootNode(n *node) {
	n.boot++
	n.staged = false
	n.bootedRound = s.round
	if n.cycle != nil {
		n.cycle.bootAt = s.now
	}
	if n.deadUntil.After(s.now) {
		n.status = statusDead
		s.push(event{at: n.deadUntil, kind: evRestart, node: n.idx})
		return
	}
	s.startAgent(n)
}

func (s *sim) restartNode(n *node) {
	if n.status != statusDead || n.deadUntil.After(s.now) {
		return
	}
	s.startAgent(n)
}

// startAgent builds a fresh agent from the persisted state (a new process)
// and runs its first pass.
func (s *sim) startAgent(n *node) {
	s.newAgent(n)
	if n.status == statusUp {
		s.stepNode(n)
	}
}

// clockJump moves virtual time forward: every event due before the landing
// point fires late, at it.
func (s *sim) clockJump(d time.Duration) {
	to := s.now.Add(d)
	s.jumps = append(s.jumps, span{from: s.now, to: to})
	var moved []event
	kept := s.q[:0]
	for _, ev := range s.q {
		if ev.at.Before(to) {
			moved = append(moved, ev)
		} else {
			kept = append(kept, ev)
		}
	}
	s.q = kept
	heap.Init(&s.q)
	slices.SortFunc(moved, func(a, b event) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		return cmp.Compare(a.seq, b.seq)
	})
	for _, ev := range moved {
		ev.at = to
		if ev.kind == evStep {
			s.nodes[ev.node].pendingAt = to
		}
		s.push(ev)
	}
}

func (s *sim) inOutage(t time.Time) bool {
	for _, o := range s.outages {
		if !t.Before(o.from) && t.Before(o.to) {
			return true
		}
	}
	return false
}

func (s *sim) confirm(n *node) {
	n.confirmedRound = s.round
	st := &s.rounds[s.round-1]
	st.confirmed++
	if at := n.clock.Now(); at.After(st.end) {
		st.end = at
	}
	if st.confirmed < len(s.nodes) {
		return
	}
	if s.round < s.cfg.Rounds {
		s.startRound(st.end)
		return
	}
	s.done = true
}

// startRound stages the update on every node and draws this round's
// faults.
func (s *sim) startRound(at time.Time) {
	s.round++
	ideal, _ := s.ideal(at)
	s.rounds = append(s.rounds, roundStat{start: at, ideal: ideal})
	for _, n := range s.nodes {
		n.staged = true
		n.rebootsInRound = 0
		n.failing = false
	}
	f := s.cfg.Faults
	if k := fractionCount(f.Kill, len(s.nodes)); k > 0 {
		perm := s.rng.Perm(len(s.nodes))[:k]
		for i, idx := range perm {
			n := s.nodes[idx]
			n.killPhase = (i + s.round) % numKillPhases
			n.killRound = s.round
			n.killDone = false
			if n.killPhase == killRandom {
				span := max(ideal, time.Hour)
				s.push(event{at: at.Add(time.Duration(s.rng.Int64N(int64(span)))).Truncate(time.Second), kind: evKill, node: idx})
			}
		}
	}
	if k := fractionCount(f.PostBootFail, len(s.nodes)); k > 0 {
		for _, idx := range s.rng.Perm(len(s.nodes))[:k] {
			s.nodes[idx].failRound = s.round
			s.nodes[idx].fixed = false
		}
	}
}

// fractionCount is how many of n nodes a fraction picks: at least one when
// the fraction is positive.
func fractionCount(f float64, n int) int {
	if f <= 0 {
		return 0
	}
	return min(n, max(1, int(math.Round(f*float64(n)))))
}
