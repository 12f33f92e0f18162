package simulate

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/offpeak/offpeak/scheduler/policy"
)

// Duration prints as a Go duration string in JSON ("26h30m0s").
type Duration time.Duration

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (d Duration) String() string { return fmtDur(time.Duration(d)) }

// Report is the outcome of one run.
type Report struct {
	Mode         string    `json:"mode"` // offpeak | fleetlock-poll
	Locker       string    `json:"locker"`
	Policy       string    `json:"policy"`
	Strategy     string    `json:"strategy"`
	Nodes        int       `json:"nodes"`
	Groups       int       `json:"groups"`
	Slots        int       `json:"slots_per_group"`
	Rounds       int       `json:"rounds"`
	RebootTime   Duration  `json:"reboot_time"`
	RebootJitter Duration  `json:"reboot_jitter"`
	Grace        Duration  `json:"post_boot_grace"`
	PollInterval *Duration `json:"poll_interval,omitempty"`
	Seed         uint64    `json:"seed"`
	Faults       string    `json:"faults"`
	From         time.Time `json:"from"`
	Until        time.Time `json:"until"`

	Complete      bool          `json:"complete"` // every round finished before --until
	Makespan      Duration      `json:"makespan"`
	IdealMakespan Duration      `json:"ideal_makespan"`
	Ratio         float64       `json:"ratio"`
	RoundStats    []RoundReport `json:"round_stats"`

	Handoff          HandoffReport  `json:"handoff"`
	Reboots          int            `json:"reboots"`
	RebootsPerWindow []WindowCount  `json:"reboots_per_window"`
	MaxHolders       map[string]int `json:"max_holders_per_group"`
	WatchedRevisions int            `json:"watched_revisions"`
	OutsideWindows   int            `json:"reboots_outside_windows"`
	Unconfirmed      []string       `json:"unconfirmed_nodes"`
	LockRequests     RequestReport  `json:"lock_requests"`
	FaultsSeen       FaultReport    `json:"faults_injected"`
	AgentPasses      int            `json:"agent_passes"`
	VirtualDuration  Duration       `json:"virtual_duration"`
	WallTime         Duration       `json:"wall_time"`

	Invariants []Invariant `json:"invariants"`
	Violations int         `json:"violations"`

	timeline *timeline
}

// RoundReport is one staged update rolled across the fleet.
type RoundReport struct {
	Round     int       `json:"round"`
	Staged    time.Time `json:"staged"`
	Confirmed time.Time `json:"last_confirmed,omitzero"`
	Makespan  Duration  `json:"makespan"`
	Ideal     Duration  `json:"ideal_makespan"`
	Ratio     float64   `json:"ratio"`
	Reboots   int       `json:"reboots"`
	Complete  bool      `json:"complete"`
}

// HandoffReport measures release → next grant in the same group, for
// releases made while another node of the group waited and the window was
// open. Missed counts releases nobody took before the window closed.
type HandoffReport struct {
	Count  int      `json:"count"`
	P50    Duration `json:"p50"`
	P99    Duration `json:"p99"`
	Max    Duration `json:"max"`
	Missed int      `json:"missed"`
}

// WindowCount is the number of reboots asked for in one window.
type WindowCount struct {
	Window  string    `json:"window"`
	Start   time.Time `json:"start"`
	Reboots int       `json:"reboots"`
}

// RequestReport counts lock-service calls per node (Acquire, Release,
// Status, Freeze as the agent makes them), plus in watch mode one Wait per
// pass that ended waiting for a slot, as the agent loop opens a watch then.
type RequestReport struct {
	Total   int     `json:"total"`
	Mean    float64 `json:"mean_per_node"`
	Max     int     `json:"max_per_node"`
	MaxNode string  `json:"max_node"`
	Watches int     `json:"watches"`
}

// FaultReport lists what was injected.
type FaultReport struct {
	Kills          map[string]int `json:"kills"`
	Outages        []Span         `json:"outages"`
	OutageRefusals int            `json:"outage_refusals"`
	FailedChecks   int            `json:"failed_post_boot_checks"`
	Thaws          int            `json:"operator_thaws"`
	ClockJumps     []Span         `json:"clock_jumps"`
}

// Span is a period of virtual time.
type Span struct {
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
}

// Invariant is one line of the invariant report.
type Invariant struct {
	Name    string `json:"name"`
	OK      bool   `json:"ok"`
	Skipped bool   `json:"skipped,omitempty"`
	Detail  string `json:"detail"`
}

func (s *sim) report(wall time.Duration) *Report {
	cfg := s.cfg
	r := &Report{
		Mode: "offpeak", Locker: s.be.name, Policy: cfg.PolicyName, Strategy: cfg.Policy.Strategy,
		Nodes: cfg.Nodes, Groups: cfg.Groups, Slots: cfg.Slots, Rounds: cfg.Rounds,
		RebootTime: Duration(cfg.RebootTime), RebootJitter: Duration(cfg.RebootJitter),
		Grace: Duration(cfg.Policy.PostBoot.Grace.D()), Seed: cfg.Seed, Faults: cfg.Faults.String(),
		From: cfg.From, Until: s.until, AgentPasses: s.steps, WallTime: Duration(wall.Round(time.Millisecond)),
		MaxHolders: map[string]int{},
	}
	if cfg.Baseline != "" {
		r.Mode = cfg.Baseline
		pi := Duration(cfg.PollInterval)
		r.PollInterval = &pi
	}
	// Rounds and makespan.
	var sumSpan, sumIdeal time.Duration
	r.Complete = s.done
	for i, st := range s.rounds {
		rr := RoundReport{Round: i + 1, Staged: st.start, Ideal: Duration(st.ideal), Reboots: st.reboots,
			Complete: st.confirmed == len(s.nodes)}
		if rr.Complete {
			rr.Confirmed = st.end
			rr.Makespan = Duration(st.end.Sub(st.start))
			if st.ideal > 0 {
				rr.Ratio = float64(rr.Makespan) / float64(st.ideal)
			}
			sumSpan += st.end.Sub(st.start)
			sumIdeal += st.ideal
		}
		r.RoundStats = append(r.RoundStats, rr)
	}
	if r.Complete {
		r.Makespan = Duration(s.rounds[len(s.rounds)-1].end.Sub(cfg.From))
		r.IdealMakespan = Duration(sumIdeal)
		if sumIdeal > 0 {
			r.Ratio = float64(sumSpan) / float64(sumIdeal)
		}
	}
	end := s.now
	if r.Complete {
		end = s.rounds[len(s.rounds)-1].end
	}
	r.VirtualDuration = Duration(end.Sub(cfg.From))

	// Hand-offs.
	h := slices.Clone(s.handoffs)
	slices.Sort(h)
	r.Handoff = HandoffReport{Count: len(h), Missed: s.missedHandoffs + s.pendingCount()}
	if len(h) > 0 {
		r.Handoff.P50 = Duration(percentile(h, 50))
		r.Handoff.P99 = Duration(percentile(h, 99))
		r.Handoff.Max = Duration(h[len(h)-1])
	}

	// Reboots.
	r.Reboots = len(s.reboots)
	perWindow := map[time.Time]int{}
	notHolder, notHolderOutage := 0, 0
	var notHolderEx []string
	for _, rb := range s.reboots {
		if !rb.inWindow {
			r.OutsideWindows++
		}
		perWindow[rb.window]++
		n := s.nodes[rb.node]
		if !s.be.heldAt(rb.probe, s.groupNames[n.group], n.id) {
			notHolder++
			if s.inOutage(rb.at) {
				notHolderOutage++
			}
			if len(notHolderEx) < 5 {
				notHolderEx = append(notHolderEx, fmt.Sprintf("%s at %s", n.id, rb.at.UTC().Format(time.RFC3339)))
			}
		}
	}
	for start, c := range perWindow {
		wc := WindowCount{Start: start, Reboots: c}
		if start.IsZero() {
			wc.Window = "outside any window"
		} else if w, ok := s.cal.Current(start); ok {
			wc.Window = w.Name
		}
		r.RebootsPerWindow = append(r.RebootsPerWindow, wc)
	}
	slices.SortFunc(r.RebootsPerWindow, func(a, b WindowCount) int { return a.Start.Compare(b.Start) })

	// Watcher.
	ws := s.be.stats()
	r.WatchedRevisions = ws.revisions
	for _, g := range s.groupNames {
		r.MaxHolders[g] = ws.maxHolders[g]
	}

	// Nodes.
	killedUnconfirmed := map[string]bool{}
	for _, n := range s.nodes {
		if n.confirmedRound < s.round {
			r.Unconfirmed = append(r.Unconfirmed, n.id)
		}
		r.LockRequests.Total += n.requests
		if n.requests > r.LockRequests.Max {
			r.LockRequests.Max, r.LockRequests.MaxNode = n.requests, n.id
		}
	}
	for _, k := range s.kills {
		if n := s.nodes[k.node]; n.confirmedRound < k.round {
			killedUnconfirmed[n.id] = true
		}
	}
	r.LockRequests.Watches = s.watches
	r.LockRequests.Mean = float64(r.LockRequests.Total) / float64(len(s.nodes))
	if r.Unconfirmed == nil {
		r.Unconfirmed = []string{}
	}

	// Faults.
	r.FaultsSeen = FaultReport{Kills: map[string]int{}, OutageRefusals: s.outageRefusals, FailedChecks: len(s.failures)}
	for _, k := range s.kills {
		r.FaultsSeen.Kills[killPhaseNames[k.phase]]++
	}
	for _, o := range s.outages {
		if !o.from.Before(end) {
			continue // planned, but the run was over before it began
		}
		r.FaultsSeen.Outages = append(r.FaultsSeen.Outages, Span{From: o.from, To: o.to})
	}
	for _, f := range s.failures {
		if !f.thawed.IsZero() {
			r.FaultsSeen.Thaws++
		}
	}
	for _, j := range s.jumps {
		r.FaultsSeen.ClockJumps = append(r.FaultsSeen.ClockJumps, Span{From: j.from, To: j.to})
	}

	// Invariants.
	add := func(name string, ok bool, detail string, args ...any) {
		r.Invariants = append(r.Invariants, Invariant{Name: name, OK: ok, Detail: fmt.Sprintf(detail, args...)})
	}
	maxH := 0
	for _, n := range r.MaxHolders {
		maxH = max(maxH, n)
	}
	add("holders ≤ slots in every group at every watched revision", len(ws.over) == 0 && s.laneOverflow == 0,
		"%d revisions watched, at most %d holders for %d slots%s", ws.revisions, maxH, cfg.Slots, examples(ws.over))
	if s.gates.Window {
		add("no reboot outside a window", r.OutsideWindows == 0, "%d of %d reboots outside", r.OutsideWindows, r.Reboots)
	} else {
		r.Invariants = append(r.Invariants, Invariant{Name: "no reboot outside a window", OK: true, Skipped: true,
			Detail: fmt.Sprintf("strategy %q has no windows", cfg.Policy.Strategy)})
	}
	add("every reboot by a slot holder (fail closed)", notHolder == 0,
		"%d of %d reboots by a node the watcher did not see holding a slot (%d during outages); %d calls refused by outages%s",
		notHolder, r.Reboots, notHolderOutage, s.outageRefusals, examples(notHolderEx))
	add("one reboot per node per staged update", s.duplicateReboots == 0, "%d duplicate reboots", s.duplicateReboots)
	var startErrs []string
	for _, e := range s.operatorErrs {
		if strings.Contains(e, "did not start") {
			startErrs = append(startErrs, e)
		}
	}
	killedNodes := map[int]bool{}
	for _, k := range s.kills {
		killedNodes[k.node] = true
	}
	resumeOK := len(killedUnconfirmed) == 0 && len(startErrs) == 0
	inv := Invariant{Name: "killed agents resumed from their state and confirmed", OK: resumeOK,
		Detail: fmt.Sprintf("%d kills on %d nodes, %d not confirmed%s", len(s.kills), len(killedNodes), len(killedUnconfirmed), examples(startErrs))}
	if !resumeOK && !r.Complete && !cfg.Until.IsZero() && len(startErrs) == 0 {
		inv.OK, inv.Skipped = true, true
		inv.Detail += " (--until reached first)"
	}
	r.Invariants = append(r.Invariants, inv)
	inv = Invariant{Name: "every live node confirmed by the end", OK: len(r.Unconfirmed) == 0,
		Detail: fmt.Sprintf("%d of %d nodes unconfirmed in round %d%s", len(r.Unconfirmed), len(s.nodes), s.round, examples(r.Unconfirmed))}
	if !inv.OK && !cfg.Until.IsZero() {
		inv.OK, inv.Skipped = true, true
		inv.Detail += " (--until reached first; not checked)"
	}
	r.Invariants = append(r.Invariants, inv)
	add("no lock-service request while nothing is staged", s.idleRequests == 0, "%d requests by idle nodes with nothing staged", s.idleRequests)
	if r.Complete {
		held := s.heldAtEnd()
		add("no slot held once every node is confirmed", len(held) == 0, "%d slots still held%s", len(held), examples(held))
	}
	for _, iv := range r.Invariants {
		if !iv.OK {
			r.Violations++
		}
	}
	r.timeline = s.timeline(r)
	return r
}

func (s *sim) pendingCount() int {
	n := 0
	for _, p := range s.pendingRel {
		n += len(p)
	}
	return n
}

// heldAtEnd asks the storage locker, not the wrappers, who holds a slot.
func (s *sim) heldAtEnd() []string {
	var out []string
	for _, g := range s.groupNames {
		st, err := s.be.direct.Status(s.ctx, g)
		if err != nil {
			out = append(out, fmt.Sprintf("group %s: status: %v", g, err))
			continue
		}
		for _, h := range st.Holders {
			out = append(out, g+"/"+h.ID)
		}
	}
	return out
}

func examples(v []string) string {
	if len(v) == 0 {
		return ""
	}
	more := ""
	if len(v) > 3 {
		v, more = v[:3], fmt.Sprintf(", … %d more", len(v)-3)
	}
	return ": " + strings.Join(v, "; ") + more
}

// percentile is the nearest-rank percentile of sorted values.
func percentile(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := (p*len(sorted) + 99) / 100
	return sorted[min(max(i-1, 0), len(sorted)-1)]
}

func fmtDur(d time.Duration) string {
	if d == 0 {
		return "0s"
	}
	if d >= time.Minute {
		d = d.Round(time.Second)
	} else if d >= time.Second {
		d = d.Round(10 * time.Millisecond)
	}
	return policy.FormatDuration(d)
}

const stamp = "2006-01-02 15:04Z"

func utc(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(stamp)
}

// WriteText prints the report for a terminal.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	mode := "watch (offpeak agents, a freed slot wakes the waiting nodes)"
	if r.PollInterval != nil {
		mode = fmt.Sprintf("FleetLock clients polling every %s, no watch", r.PollInterval)
	}
	fmt.Fprintf(&b, "offpeak simulate: %d nodes, %d group(s) × %d slot(s), %s locker, %s\n", r.Nodes, r.Groups, r.Slots, r.Locker, mode)
	fmt.Fprintf(&b, "policy %s (strategy %s), reboot %s", r.Policy, r.Strategy, r.RebootTime)
	if r.RebootJitter > 0 {
		fmt.Fprintf(&b, " + up to %s", r.RebootJitter)
	}
	fmt.Fprintf(&b, ", post-boot grace %s, seed %d, faults %s", r.Grace, r.Seed, r.Faults)
	if r.Rounds > 1 {
		fmt.Fprintf(&b, ", %d rounds", r.Rounds)
	}
	fmt.Fprintf(&b, "\nfirst staged %s\n\n", utc(r.From))
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	row := func(k, f string, a ...any) { fmt.Fprintf(tw, "%s\t%s\n", k, fmt.Sprintf(f, a...)) }
	if r.Complete {
		row("makespan", "%s (%s → %s)", r.Makespan, utc(r.From), utc(r.From.Add(time.Duration(r.Makespan))))
		row("ideal makespan", "%s", r.IdealMakespan)
		row("makespan / ideal", "%.3f", r.Ratio)
	} else {
		row("makespan", "incomplete: --until %s reached first", utc(r.Until))
	}
	if r.Rounds > 1 {
		for _, rr := range r.RoundStats {
			if rr.Complete {
				row(fmt.Sprintf("  round %d", rr.Round), "staged %s, %d reboots, makespan %s, ideal %s, ratio %.3f",
					utc(rr.Staged), rr.Reboots, rr.Makespan, rr.Ideal, rr.Ratio)
			} else {
				row(fmt.Sprintf("  round %d", rr.Round), "staged %s, %d reboots, incomplete", utc(rr.Staged), rr.Reboots)
			}
		}
	}
	row("slot hand-off gap", "p50 %s, p99 %s, max %s (%d hand-offs, %d releases not taken before the window closed)",
		r.Handoff.P50, r.Handoff.P99, r.Handoff.Max, r.Handoff.Count, r.Handoff.Missed)
	row("reboots", "%d", r.Reboots)
	var pw []string
	for i, wc := range r.RebootsPerWindow {
		if i == 8 {
			pw = append(pw, fmt.Sprintf("… %d more windows", len(r.RebootsPerWindow)-i))
			break
		}
		if wc.Start.IsZero() {
			pw = append(pw, fmt.Sprintf("%s: %d", wc.Window, wc.Reboots))
		} else {
			pw = append(pw, fmt.Sprintf("%s %s: %d", wc.Window, utc(wc.Start), wc.Reboots))
		}
	}
	row("reboots per window", "%s", strings.Join(pw, "; "))
	var mh []string
	for _, g := range sortedKeys(r.MaxHolders) {
		mh = append(mh, fmt.Sprintf("%s %d/%d", g, r.MaxHolders[g], r.Slots))
	}
	if len(mh) > 6 {
		mh = append(mh[:6], fmt.Sprintf("… %d more groups", len(mh)-6))
	}
	row("max holders per group", "%s (independent watcher, %d revisions)", strings.Join(mh, ", "), r.WatchedRevisions)
	row("reboots outside windows", "%d", r.OutsideWindows)
	row("unconfirmed nodes", "%d", len(r.Unconfirmed))
	row("lock requests per node", "mean %.1f, max %d (%s); %d in all, %d of them watches", r.LockRequests.Mean, r.LockRequests.Max,
		r.LockRequests.MaxNode, r.LockRequests.Total, r.LockRequests.Watches)
	if r.Faults != "none" {
		var ks []string
		for _, k := range sortedKeys(r.FaultsSeen.Kills) {
			ks = append(ks, fmt.Sprintf("%s %d", k, r.FaultsSeen.Kills[k]))
		}
		row("kills", "%s", cmp.Or(strings.Join(ks, ", "), "none"))
		var outs []string
		for _, o := range r.FaultsSeen.Outages {
			outs = append(outs, fmt.Sprintf("%s for %s", utc(o.From), fmtDur(o.To.Sub(o.From))))
		}
		row("lock-service outages", "%s (%d calls refused)", cmp.Or(strings.Join(outs, ", "), "none"), r.FaultsSeen.OutageRefusals)
		row("failed post-boot checks", "%d (%d thawed by the operator)", r.FaultsSeen.FailedChecks, r.FaultsSeen.Thaws)
		var js []string
		for _, j := range r.FaultsSeen.ClockJumps {
			js = append(js, fmt.Sprintf("%s +%s", utc(j.From), fmtDur(j.To.Sub(j.From))))
		}
		row("clock jumps", "%s", cmp.Or(strings.Join(js, ", "), "none"))
	}
	row("virtual time simulated", "%s", r.VirtualDuration)
	row("wall-clock run time", "%s (%d agent passes)", r.WallTime, r.AgentPasses)
	if err := tw.Flush(); err != nil {
		return err
	}
	b.WriteString("\ninvariants\n")
	for _, iv := range r.Invariants {
		mark := "ok  "
		switch {
		case iv.Skipped:
			mark = "skip"
		case !iv.OK:
			mark = "FAIL"
		}
		fmt.Fprintf(&b, "  %s  %s — %s\n", mark, iv.Name, iv.Detail)
	}
	fmt.Fprintf(&b, "%d invariant violation(s)\n", r.Violations)
	_, err := io.WriteString(w, b.String())
	return err
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// Comparison is the main run and the baseline side by side.
type Comparison struct {
	Offpeak  *Report `json:"offpeak"`
	Baseline *Report `json:"baseline"`
}

// WriteText prints both reports and a table of the headline figures.
func (c Comparison) WriteText(w io.Writer) error {
	for _, r := range []*Report{c.Offpeak, c.Baseline} {
		if err := r.WriteText(w); err != nil {
			return err
		}
		if _, err := io.WriteString(w, "\n"); err != nil {
			return err
		}
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	a, b := c.Offpeak, c.Baseline
	fmt.Fprintf(tw, "comparison\toffpeak (watch)\t%s %s\n", b.Mode, b.PollInterval)
	line := func(k string, f func(r *Report) string) { fmt.Fprintf(tw, "%s\t%s\t%s\n", k, f(a), f(b)) }
	line("makespan", func(r *Report) string {
		if !r.Complete {
			return "incomplete"
		}
		return r.Makespan.String()
	})
	line("ideal makespan", func(r *Report) string { return r.IdealMakespan.String() })
	line("makespan / ideal", func(r *Report) string { return fmt.Sprintf("%.3f", r.Ratio) })
	line("hand-off p50 / p99", func(r *Report) string { return fmt.Sprintf("%s / %s", r.Handoff.P50, r.Handoff.P99) })
	line("windows used", func(r *Report) string { return fmt.Sprint(len(r.RebootsPerWindow)) })
	line("lock requests per node", func(r *Report) string {
		return fmt.Sprintf("mean %.1f, max %d", r.LockRequests.Mean, r.LockRequests.Max)
	})
	line("invariant violations", func(r *Report) string { return fmt.Sprint(r.Violations) })
	line("wall-clock run time", func(r *Report) string { return r.WallTime.String() })
	return tw.Flush()
}

// Violations sums both runs' violations.
func (c Comparison) Violations() int { return c.Offpeak.Violations + c.Baseline.Violations }
