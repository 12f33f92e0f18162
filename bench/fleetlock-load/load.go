package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// config is the command line.
type config struct {
	url, group, idPrefix string
	clients, slots       int
	grants               int64
	duration, hold       time.Duration
	retry, timeout       time.Duration
	output, jsonFile     string
	seed                 uint64
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("fleetlock-load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.url, "url", "", "base URL of the FleetLock server, e.g. http://127.0.0.1:8080 (required)")
	fs.StringVar(&c.group, "group", "default", "group every client asks in")
	fs.StringVar(&c.idPrefix, "id-prefix", "load-", "client ids are this prefix and a number")
	fs.IntVar(&c.clients, "clients", 50, "concurrent clients")
	fs.IntVar(&c.slots, "slots", 10, "the group's slot count, for the holders-at-once check")
	fs.Int64Var(&c.grants, "grants", 0, "stop after this many grants in all (0: run for --duration)")
	fs.DurationVar(&c.duration, "duration", 30*time.Second, "how long to run when --grants is 0")
	fs.DurationVar(&c.hold, "hold", 10*time.Millisecond, "how long a client holds a granted slot before steady-state")
	fs.DurationVar(&c.retry, "retry", 10*time.Millisecond, "mean pause after a refused pre-reboot (each pause is uniform in [0.5, 1.5) times this)")
	fs.DurationVar(&c.timeout, "timeout", 10*time.Second, "per request")
	fs.StringVar(&c.output, "output", "text", "text or json, on stdout")
	fs.StringVar(&c.jsonFile, "json", "", "also write the JSON report to this file")
	fs.Uint64Var(&c.seed, "seed", 1, "seed of the retry jitter")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	switch {
	case fs.NArg() > 0:
		return c, fmt.Errorf("unexpected arguments: %q", fs.Args())
	case c.url == "":
		return c, errors.New("--url is required")
	case c.clients < 1:
		return c, fmt.Errorf("--clients %d: want at least 1", c.clients)
	case c.slots < 1:
		return c, fmt.Errorf("--slots %d: want at least 1", c.slots)
	case c.grants < 0:
		return c, fmt.Errorf("--grants %d: want 0 or more", c.grants)
	case c.grants == 0 && c.duration <= 0:
		return c, errors.New("give a positive --duration or --grants")
	case c.hold < 0 || c.retry < 0 || c.timeout <= 0:
		return c, errors.New("--hold and --retry must not be negative, --timeout must be positive")
	case c.output != "text" && c.output != "json":
		return c, fmt.Errorf("--output %q: want text or json", c.output)
	}
	u, err := url.Parse(c.url)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return c, fmt.Errorf("--url %q: want http(s)://host:port", c.url)
	}
	c.url = strings.TrimSuffix(c.url, "/")
	return c, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	rep, err := load(ctx, cfg)
	if err != nil {
		return err
	}
	if cfg.jsonFile != "" {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(cfg.jsonFile, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	if cfg.output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	return rep.writeText(stdout)
}

const (
	preReboot   = "pre-reboot"
	steadyState = "steady-state"
)

// answer is one request's outcome.
type answer struct {
	code  int    // 0: no HTTP answer
	kind  string // the FleetLock error kind, or the transport error's class
	value string
}

// full reports a refusal because every slot is taken: 409 failed_lock from
// offpeak, 500 failed_lock from airlock; both say so in the same words.
func (a answer) full() bool {
	return a.kind == "failed_lock" && strings.Contains(a.value, "slots currently locked")
}

func (a answer) key(endpoint string) string {
	if a.code == 0 {
		return endpoint + " error " + a.kind
	}
	k := fmt.Sprintf("%s %d", endpoint, a.code)
	if a.code != http.StatusOK {
		k += " " + cmpOr(a.kind, "-")
		if a.full() {
			k += " (slots full)"
		}
	}
	return k
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// holding is one grant as the client saw it. Inner is the span the client
// surely held the slot (from the grant's answer to sending its first
// steady-state), outer the span it may have held it (from sending the
// request that was granted to the answer of the steady-state that
// succeeded).
type holding struct {
	inner, outer span
}

type span struct{ from, to time.Time }

// clientStats is what one client gathers; merged after the run.
type clientStats struct {
	latency  map[string][]time.Duration // per endpoint
	waits    []time.Duration            // first pre-reboot sent → grant received
	holds    []holding
	answers  map[string]int64
	http5xx  int64
	http5xxF int64 // 5xx that only said the group is full (airlock's refusal)
	transErr int64
	grants   int64
	inWindow int64 // grants received before the run was stopped
	lost     int64 // releases given up on
}

type loader struct {
	cfg    config
	hc     *http.Client
	stopAt atomic.Pointer[time.Time]
	total  atomic.Int64
	stop   context.CancelFunc
}

func load(ctx context.Context, cfg config) (*Report, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	// One kept-alive connection per client, as separate nodes would have.
	tr.MaxIdleConns = 2 * cfg.clients
	tr.MaxIdleConnsPerHost = 2 * cfg.clients
	l := &loader{cfg: cfg, hc: &http.Client{Transport: tr}}
	defer tr.CloseIdleConnections()

	// runCtx ends the measured period; requests live on ctx, so a client
	// that is granted after the end still gives its slot back.
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	l.stop = stop
	if cfg.grants == 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(runCtx, cfg.duration)
		defer cancel()
	}
	start := time.Now()
	stats := make([]*clientStats, cfg.clients)
	var wg sync.WaitGroup
	for i := range cfg.clients {
		st := &clientStats{latency: map[string][]time.Duration{}, answers: map[string]int64{}}
		stats[i] = st
		rng := rand.New(rand.NewPCG(cfg.seed, uint64(i)))
		id := fmt.Sprintf("%s%03d", cfg.idPrefix, i)
		wg.Go(func() { l.client(ctx, runCtx, id, rng, st) })
	}
	<-runCtx.Done()
	stopped := time.Now()
	if p := l.stopAt.Load(); p != nil {
		stopped = *p
	}
	wg.Wait()
	end := time.Now()
	if ctx.Err() != nil {
		return nil, fmt.Errorf("interrupted: %w", ctx.Err())
	}
	return l.report(stats, start, stopped, end), nil
}

// client loops ask → hold → release until runCtx ends.
func (l *loader) client(ctx, runCtx context.Context, id string, rng *rand.Rand, st *clientStats) {
	body, _ := json.Marshal(map[string]any{"client_params": map[string]string{"id": id, "group": l.cfg.group}})
	for runCtx.Err() == nil {
		first := time.Now()
		var sent time.Time
		granted := false
		for runCtx.Err() == nil {
			sent = time.Now()
			a := l.post(ctx, preReboot, body, st)
			if a.code == http.StatusOK {
				granted = true
				break
			}
			l.pause(runCtx, l.jitter(rng))
		}
		if !granted {
			return
		}
		got := time.Now()
		st.grants++
		st.waits = append(st.waits, got.Sub(first))
		if runCtx.Err() == nil {
			st.inWindow++
			if n := l.total.Add(1); l.cfg.grants > 0 && n == l.cfg.grants {
				l.stopAt.Store(&got)
				l.stop()
			}
		}
		l.pause(runCtx, l.cfg.hold)
		h := holding{inner: span{from: got}, outer: span{from: sent}}
		h.inner.to, h.outer.to = l.release(ctx, body, rng, st)
		st.holds = append(st.holds, h)
	}
}

// release reports steady-state until it is answered 200. It returns when
// the first attempt was sent (the slot was surely held until then: a
// failed attempt may still have released it) and when the successful one
// was answered, or the zero time when it gave up (held to the end, as far
// as the client knows).
func (l *loader) release(ctx context.Context, body []byte, rng *rand.Rand, st *clientStats) (first, answered time.Time) {
	const attempts = 20
	for i := range attempts {
		sent := time.Now()
		if i == 0 {
			first = sent
		}
		if a := l.post(ctx, steadyState, body, st); a.code == http.StatusOK {
			return first, time.Now()
		}
		if ctx.Err() != nil {
			break
		}
		l.pause(ctx, l.jitter(rng))
	}
	st.lost++
	return first, time.Time{}
}

func (l *loader) jitter(rng *rand.Rand) time.Duration {
	if l.cfg.retry <= 0 {
		return 0
	}
	return l.cfg.retry/2 + time.Duration(rng.Int64N(int64(l.cfg.retry)))
}

func (l *loader) pause(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// post sends one FleetLock request and records its answer.
func (l *loader) post(ctx context.Context, endpoint string, body []byte, st *clientStats) answer {
	rctx, cancel := context.WithTimeout(ctx, l.cfg.timeout)
	defer cancel()
	start := time.Now()
	a := l.do(rctx, endpoint, body)
	st.latency[endpoint] = append(st.latency[endpoint], time.Since(start))
	st.answers[a.key(endpoint)]++
	switch {
	case a.code == 0:
		st.transErr++
	case a.code >= 500:
		st.http5xx++
		if a.full() {
			st.http5xxF++
		}
	}
	return a
}

func (l *loader) do(ctx context.Context, endpoint string, body []byte) answer {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, l.cfg.url+"/v1/"+endpoint, bytes.NewReader(body))
	if err != nil {
		return answer{kind: "request"}
	}
	req.Header.Set("fleet-lock-protocol", "true")
	req.Header.Set("Content-Type", "application/json")
	resp, err := l.hc.Do(req)
	if err != nil {
		kind := "transport"
		if errors.Is(err, context.DeadlineExceeded) {
			kind = "timeout"
		}
		return answer{kind: kind}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return answer{kind: "transport"}
	}
	a := answer{code: resp.StatusCode}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Kind, Value string }
		if json.Unmarshal(bytes.TrimSpace(b), &e) == nil {
			a.kind, a.value = e.Kind, e.Value
		}
	}
	return a
}

// Report is the run's outcome; its JSON is what the bench scripts read.
type Report struct {
	URL       string  `json:"url"`
	Group     string  `json:"group"`
	Clients   int     `json:"clients"`
	Slots     int     `json:"slots"`
	HoldMS    float64 `json:"hold_ms"`
	RetryMS   float64 `json:"retry_ms"`
	ElapsedS  float64 `json:"elapsed_s"` // the measured period
	DrainS    float64 `json:"drain_s"`   // from its end until every client finished
	Grants    int64   `json:"grants"`    // in the measured period
	GrantsAll int64   `json:"grants_all"`
	GrantsPS  float64 `json:"grants_per_s"`
	Requests  int64   `json:"requests"`
	RequestPS float64 `json:"requests_per_s"`

	Latency   map[string]Dist `json:"latency_ms"` // "all", "pre-reboot", "steady-state"
	GrantWait Dist            `json:"grant_wait_ms"`

	Answers         map[string]int64 `json:"answers"`
	HTTP5xx         int64            `json:"http_5xx"`
	HTTP5xxNotFull  int64            `json:"http_5xx_not_full"`
	TransportErrors int64            `json:"transport_errors"`
	ReleasesLost    int64            `json:"releases_given_up"`

	Invariant Invariant `json:"holders_at_once"`
}

// Dist is a latency distribution in milliseconds.
type Dist struct {
	Count int64   `json:"count"`
	P50   float64 `json:"p50"`
	P99   float64 `json:"p99"`
	Max   float64 `json:"max"`
}

// Invariant is the clients' view of how many held a slot at once.
type Invariant struct {
	// SurelyMax: the most clients whose sure spans (grant answered →
	// first steady-state sent) overlap; above Slots is a real violation.
	SurelyMax int `json:"surely_max"`
	// AtMostMax: the most whose possible spans (request sent →
	// steady-state answered) overlap; may exceed Slots without a fault.
	AtMostMax int `json:"at_most_max"`
	// Violations: grants whose sure span began while Slots others' sure
	// spans were open.
	Violations int    `json:"violations"`
	Note       string `json:"note"`
}

const invariantNote = "client-side estimate: the server's grant and release happen somewhere inside each request, " +
	"so the sure spans can only miss a violation (never invent one) and the possible spans can only overstate"

func (l *loader) report(stats []*clientStats, start, stopped, end time.Time) *Report {
	r := &Report{
		URL: l.cfg.url, Group: l.cfg.group, Clients: l.cfg.clients, Slots: l.cfg.slots,
		HoldMS: ms(l.cfg.hold), RetryMS: ms(l.cfg.retry),
		ElapsedS: stopped.Sub(start).Seconds(), DrainS: end.Sub(stopped).Seconds(),
		Latency: map[string]Dist{}, Answers: map[string]int64{},
	}
	lat := map[string][]time.Duration{}
	var waits []time.Duration
	var inner, outer []span
	for _, st := range stats {
		for ep, ds := range st.latency {
			lat[ep] = append(lat[ep], ds...)
			lat["all"] = append(lat["all"], ds...)
		}
		waits = append(waits, st.waits...)
		var mine []span
		for _, h := range st.holds {
			if h.outer.to.IsZero() {
				h.outer.to = end
			}
			inner = append(inner, h.inner)
			mine = append(mine, h.outer)
		}
		// One id holds one slot at most (a pre-reboot by a holder is
		// granted again, not twice): a client's possible spans overlap
		// only after a release it gave up on, and count once.
		outer = append(outer, union(mine)...)
		for k, n := range st.answers {
			r.Answers[k] += n
		}
		r.HTTP5xx += st.http5xx
		r.HTTP5xxNotFull += st.http5xx - st.http5xxF
		r.TransportErrors += st.transErr
		r.Grants += st.inWindow
		r.GrantsAll += st.grants
		r.ReleasesLost += st.lost
	}
	for k, ds := range lat {
		r.Latency[k] = dist(ds)
	}
	r.Requests = r.Latency["all"].Count
	r.GrantWait = dist(waits)
	if r.ElapsedS > 0 {
		r.GrantsPS = float64(r.Grants) / r.ElapsedS
		r.RequestPS = float64(r.Requests) / (r.ElapsedS + r.DrainS)
	}
	r.Invariant.SurelyMax, r.Invariant.Violations = overlap(inner, l.cfg.slots)
	r.Invariant.AtMostMax, _ = overlap(outer, l.cfg.slots)
	r.Invariant.Note = invariantNote
	return r
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// dist summarises durations; quantiles are nearest-rank.
func dist(ds []time.Duration) Dist {
	if len(ds) == 0 {
		return Dist{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	q := func(p float64) time.Duration {
		i := int(p*float64(len(s))+0.999999) - 1
		return s[min(max(i, 0), len(s)-1)]
	}
	return Dist{Count: int64(len(s)), P50: ms(q(.50)), P99: ms(q(.99)), Max: ms(s[len(s)-1])}
}

// union merges overlapping spans.
func union(spans []span) []span {
	s := slices.Clone(spans)
	slices.SortFunc(s, func(a, b span) int { return a.from.Compare(b.from) })
	var out []span
	for _, x := range s {
		if n := len(out); n > 0 && !x.from.After(out[n-1].to) {
			if x.to.After(out[n-1].to) {
				out[n-1].to = x.to
			}
			continue
		}
		out = append(out, x)
	}
	return out
}

// overlap returns the most spans open at one instant and how many spans
// began while at least slots others were open. Spans are half-open
// [from, to): one that ends when another begins does not overlap it.
func overlap(spans []span, slots int) (most, violations int) {
	type edge struct {
		at    time.Time
		delta int
	}
	edges := make([]edge, 0, 2*len(spans))
	for _, s := range spans {
		if !s.to.After(s.from) {
			continue
		}
		edges = append(edges, edge{s.from, +1}, edge{s.to, -1})
	}
	slices.SortFunc(edges, func(a, b edge) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		return a.delta - b.delta // ends first
	})
	open := 0
	for _, e := range edges {
		if e.delta > 0 && open >= slots {
			violations++
		}
		open += e.delta
		most = max(most, open)
	}
	return most, violations
}

func (r *Report) writeText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "fleetlock-load %s group %q: %d clients, %d slots, hold %gms, retry %gms\n",
		r.URL, r.Group, r.Clients, r.Slots, r.HoldMS, r.RetryMS)
	fmt.Fprintf(&b, "measured %.1fs (+%.1fs for the last releases): %d grants, %.1f grants/s; %d requests, %.0f requests/s\n",
		r.ElapsedS, r.DrainS, r.Grants, r.GrantsPS, r.Requests, r.RequestPS)
	fmt.Fprintf(&b, "%-22s %9s %10s %10s %10s\n", "ms", "count", "p50", "p99", "max")
	row := func(name string, d Dist) {
		fmt.Fprintf(&b, "%-22s %9d %10.2f %10.2f %10.2f\n", name, d.Count, d.P50, d.P99, d.Max)
	}
	row("request (all)", r.Latency["all"])
	row("  pre-reboot", r.Latency[preReboot])
	row("  steady-state", r.Latency[steadyState])
	row("wait for a grant", r.GrantWait)
	b.WriteString("answers\n")
	keys := make([]string, 0, len(r.Answers))
	for k := range r.Answers {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "  %-44s %9d\n", k, r.Answers[k])
	}
	fmt.Fprintf(&b, "5xx answers %d (%d other than \"slots full\"); transport errors %d; releases given up %d\n",
		r.HTTP5xx, r.HTTP5xxNotFull, r.TransportErrors, r.ReleasesLost)
	fmt.Fprintf(&b, "holders at once, as the clients saw it: surely %d, at most %d, slots %d; grants over the slots: %d\n",
		r.Invariant.SurelyMax, r.Invariant.AtMostMax, r.Slots, r.Invariant.Violations)
	fmt.Fprintf(&b, "  (%s)\n", r.Invariant.Note)
	_, err := io.WriteString(w, b.String())
	return err
}
