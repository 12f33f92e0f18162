// Package prometheus is the built-in "prometheus" health check: it asks a
// Prometheus server for its active alerts and fails while any alert that
// matches the filters is firing (or pending, when asked to).
//
// Filters: every label in match must equal its value, every label in
// match_regex must fully match its RE2 expression (anchored, as in PromQL),
// and an alert whose alertname is in ignore never counts. A label the alert
// does not carry reads as "". No filters means every alert counts.
//
// A query that cannot be answered — unreachable server, non-200 status,
// "status" other than "success", malformed JSON — is Outcome Error, never a
// pass. The bearer token is read from its file on every check (so rotation
// needs no restart) and is never logged or put in a reason.
package prometheus

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	nethttp "net/http"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/offpeak/offpeak/internal/checks/checkutil"
	"github.com/offpeak/offpeak/internal/httpx"
	"github.com/offpeak/offpeak/internal/registry"
	"github.com/offpeak/offpeak/internal/tlsutil"
	"github.com/offpeak/offpeak/plugins"
)

const (
	alertsPath = "api/v1/alerts"
	// maxResponse bounds the alerts document read from the server.
	maxResponse = 16 << 20
	// reasonBytes bounds the list of alert names quoted in a reason.
	reasonBytes = 300
)

// Config is the [health.config] table of a prometheus check.
type Config struct {
	// URL is the Prometheus base URL, e.g. "http://127.0.0.1:9090"; a path
	// prefix is kept. Required.
	URL string `json:"url"`
	// Match selects alerts whose labels equal these values.
	Match map[string]string `json:"match,omitempty"`
	// MatchRegex selects alerts whose labels fully match these expressions.
	MatchRegex map[string]string `json:"match_regex,omitempty"`
	// Ignore lists alertnames that never count.
	Ignore []string `json:"ignore,omitempty"`
	// IncludePending makes pending alerts count as well as firing ones.
	IncludePending bool `json:"include_pending,omitempty"`
	// CAFile (PEM), when set, is the only trust anchor for the server.
	CAFile string `json:"ca_file,omitempty"`
	// BearerTokenFile holds a token sent as "Authorization: Bearer …".
	BearerTokenFile string `json:"bearer_token_file,omitempty"`
}

// SecretKeys: the token is read from bearer_token_file, a path; user info
// and query values of url are hidden as in every URL.
func (Config) SecretKeys() []string { return nil }

// Alert is one entry of the /api/v1/alerts answer; fields offpeak does not
// use (annotations, activeAt, value) are not decoded so their format cannot
// break a check.
type Alert struct {
	Labels map[string]string `json:"labels"`
	State  string            `json:"state"`
}

// Alert states reported by Prometheus.
const (
	StateFiring   = "firing"
	StatePending  = "pending"
	StateInactive = "inactive"
)

// ErrBadResponse marks an alerts answer that cannot be trusted: malformed,
// incomplete, or reporting a query error.
var ErrBadResponse = errors.New("bad alerts response")

type alertsResponse struct {
	Status    string `json:"status"`
	ErrorType string `json:"errorType,omitempty"`
	Error     string `json:"error,omitempty"`
	Data      *struct {
		Alerts *[]Alert `json:"alerts"`
	} `json:"data"`
}

// parseAlerts decodes an /api/v1/alerts document. Anything short of a
// complete success answer is an error wrapping ErrBadResponse.
func parseAlerts(body []byte) ([]Alert, error) {
	var r alertsResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadResponse, err)
	}
	if r.Status != "success" {
		msg := r.Error
		if r.ErrorType != "" {
			msg = r.ErrorType + ": " + msg
		}
		return nil, fmt.Errorf("%w: status %q: %s", ErrBadResponse, r.Status, checkutil.Truncate(msg, 200))
	}
	if r.Data == nil || r.Data.Alerts == nil {
		return nil, fmt.Errorf("%w: no data.alerts", ErrBadResponse)
	}
	alerts := *r.Data.Alerts
	for i, a := range alerts {
		switch a.State {
		case StateFiring, StatePending, StateInactive:
		default:
			return nil, fmt.Errorf("%w: alert %d has unknown state %q", ErrBadResponse, i, checkutil.Truncate(a.State, 40))
		}
	}
	return alerts, nil
}

// filter is a compiled Config selection.
type filter struct {
	match          map[string]string
	matchRegex     map[string]*regexp.Regexp
	ignore         []string
	includePending bool
}

func (f *filter) counts(a Alert) bool {
	switch a.State {
	case StateFiring:
	case StatePending:
		if !f.includePending {
			return false
		}
	default:
		return false
	}
	if slices.Contains(f.ignore, a.Labels["alertname"]) {
		return false
	}
	for k, v := range f.match {
		if a.Labels[k] != v {
			return false
		}
	}
	for k, re := range f.matchRegex {
		if !re.MatchString(a.Labels[k]) {
			return false
		}
	}
	return true
}

// Check is the prometheus health check.
type Check struct {
	checkutil.Base
}

// New returns the prometheus check.
func New(log *slog.Logger) plugins.HealthCheck {
	return &Check{Base: checkutil.NewBase(log)}
}

// Module registers the prometheus health check with offpeak's built-ins.
func Module() registry.Module[plugins.HealthCheck] {
	return registry.Module[plugins.HealthCheck]{Name: "prometheus", Config: func() any { return &Config{} }, New: registry.Logged(New)}
}

type prepared struct {
	*httpx.Request
	filter filter
}

func prepare(ctx context.Context, cfg *Config) (*prepared, error) {
	u, err := httpx.ParseURL(cfg.URL)
	if err != nil {
		return nil, err
	}
	u = u.JoinPath(alertsPath)
	u.RawQuery, u.Fragment = "", ""
	f := filter{match: cfg.Match, ignore: cfg.Ignore, includePending: cfg.IncludePending}
	for k, expr := range cfg.MatchRegex {
		re, err := regexp.Compile("^(?:" + expr + ")$")
		if err != nil {
			return nil, fmt.Errorf("%w: match_regex %s: %w", plugins.ErrInvalidArgument, k, err)
		}
		if f.matchRegex == nil {
			f.matchRegex = map[string]*regexp.Regexp{}
		}
		f.matchRegex[k] = re
	}
	r, err := httpx.NewRequest(ctx, nethttp.MethodGet, u, tlsutil.Options{CAFile: cfg.CAFile})
	if err != nil {
		return nil, err
	}
	r.Req.Header.Set("Accept", "application/json")
	if cfg.BearerTokenFile != "" {
		tok, err := readToken(cfg.BearerTokenFile)
		if err != nil {
			return nil, err
		}
		r.Req.Header.Set("Authorization", "Bearer "+tok)
	}
	return &prepared{Request: r, filter: f}, nil
}

func readToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%w: bearer_token_file: %w", plugins.ErrInvalidArgument, err)
	}
	tok := string(bytes.TrimSpace(b))
	// Errors name the file only; the content is a secret.
	if tok == "" {
		return "", fmt.Errorf("%w: bearer_token_file %s is empty", plugins.ErrInvalidArgument, path)
	}
	if strings.ContainsAny(tok, "\r\n\x00") {
		return "", fmt.Errorf("%w: bearer_token_file %s holds more than one line", plugins.ErrInvalidArgument, path)
	}
	return tok, nil
}

// Check queries the alerts once.
func (c *Check) Check(ctx context.Context, req plugins.CheckRequest) (plugins.CheckResult, error) {
	var cfg Config
	if err := plugins.DecodeConfig(req.Config, &cfg); err != nil {
		return plugins.CheckResult{}, fmt.Errorf("prometheus check %q: %w", req.Name, err)
	}
	p, err := prepare(ctx, &cfg)
	if err != nil {
		return plugins.CheckResult{}, fmt.Errorf("prometheus check %q: %w", req.Name, err)
	}
	started := time.Now()
	return c.Done(ctx, "prometheus", req.Name, started, c.run(ctx, p, started), slog.String("target", p.Target)), nil
}

func (c *Check) run(ctx context.Context, p *prepared, started time.Time) plugins.CheckResult {
	status, body, err := p.Fetch(maxResponse + 1)
	var alerts []Alert
	if err == nil {
		alerts, err = readAnswer(status, body)
	}
	if err != nil {
		return c.RequestError(ctx, started, p.Target, err, nil)
	}
	return c.verdict(alerts, &p.filter)
}

// readAnswer returns the alerts of a complete 200 answer. Any other
// answer is an error; for a non-200 status it quotes the server's error
// document when there is one.
func readAnswer(status int, body []byte) ([]Alert, error) {
	if len(body) > maxResponse {
		return nil, fmt.Errorf("%w: response larger than %d bytes", ErrBadResponse, maxResponse)
	}
	alerts, err := parseAlerts(body)
	if status == nethttp.StatusOK {
		return alerts, err
	}
	msg := "status " + strconv.Itoa(status)
	if err != nil && json.Valid(body) {
		msg += ": " + strings.TrimPrefix(err.Error(), ErrBadResponse.Error()+": ")
	}
	return nil, errors.New(msg)
}

func (c *Check) verdict(alerts []Alert, f *filter) plugins.CheckResult {
	var firing, pending []string
	for _, a := range alerts {
		if !f.counts(a) {
			continue
		}
		name := a.Labels["alertname"]
		if name == "" {
			name = "(no alertname)"
		}
		if a.State == StateFiring {
			firing = append(firing, name)
		} else {
			pending = append(pending, name)
		}
	}
	details := map[string]string{
		"active":   strconv.Itoa(countActive(alerts)),
		"matching": strconv.Itoa(len(firing) + len(pending)),
	}
	if len(firing)+len(pending) == 0 {
		what := "firing"
		if f.includePending {
			what = "firing or pending"
		}
		return c.Result(plugins.Pass,
			fmt.Sprintf("no matching alert %s (%s active)", what, details["active"]), details)
	}
	var parts []string
	if len(firing) > 0 {
		parts = append(parts, "firing: "+nameList(firing))
	}
	if len(pending) > 0 {
		parts = append(parts, "pending: "+nameList(pending))
	}
	return c.Result(plugins.Fail, "alerts "+strings.Join(parts, "; "), details)
}

func countActive(alerts []Alert) int {
	n := 0
	for _, a := range alerts {
		if a.State == StateFiring || a.State == StatePending {
			n++
		}
	}
	return n
}

// nameList renders distinct names, sorted, cut to reasonBytes with a count
// of what was left out. An alert firing for several series shows once.
func nameList(names []string) string {
	slices.Sort(names)
	names = slices.Compact(names)
	var b strings.Builder
	for i, n := range names {
		n = checkutil.Truncate(n, 80)
		if i > 0 && b.Len()+2+len(n) > reasonBytes {
			fmt.Fprintf(&b, " (+%d more)", len(names)-i)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(n)
	}
	return b.String()
}
