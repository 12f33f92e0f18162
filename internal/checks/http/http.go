// Package http is the built-in "http" health check: it sends one request
// and passes when the status is expected and, if configured, the body
// matches a regular expression.
//
// The check does not follow redirects (list 3xx in expect_status to accept
// one), uses no proxy from the environment, and reads at most MaxBody bytes
// of the body. Header values, user info and the query string of the URL are
// never logged or put in a reason, since they may carry credentials.
package http

import (
	"context"
	"fmt"
	"log/slog"
	nethttp "net/http"
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

// MaxBody is how much of the response body is read and matched.
const MaxBody = 1 << 20

// Config is the [health.config] table of an http check.
type Config struct {
	// URL to request; http or https. Required.
	URL string `json:"url"`
	// Method defaults to GET.
	Method string `json:"method,omitempty"`
	// ExpectStatus lists the statuses that pass; default [200].
	ExpectStatus []int `json:"expect_status,omitempty"`
	// BodyRegex (RE2 syntax), when set, must match somewhere in the first
	// MaxBody bytes of the body.
	BodyRegex string `json:"body_regex,omitempty"`
	// Headers are added to the request; "Host" sets the virtual host.
	Headers map[string]string `json:"headers,omitempty"`
	// CAFile (PEM), when set, is the only trust anchor for the server.
	CAFile string `json:"ca_file,omitempty"`
	// InsecureSkipVerify disables server certificate checks.
	InsecureSkipVerify bool `json:"insecure_skip_verify,omitempty"`
	// ClientCert and ClientKey (PEM files) enable mutual TLS.
	ClientCert string `json:"client_cert,omitempty"`
	ClientKey  string `json:"client_key,omitempty"`
}

// SecretKeys lists the settings `policy show` must not print: header
// values commonly carry credentials; client_key names a key file, hidden
// too so that a key pasted inline by mistake is never printed.
func (Config) SecretKeys() []string { return []string{"headers", "client_key"} }

// Check is the http health check.
type Check struct {
	checkutil.Base
}

// New returns the http check.
func New(log *slog.Logger) plugins.HealthCheck {
	return &Check{Base: checkutil.NewBase(log)}
}

// Module registers the http health check with offpeak's built-ins.
func Module() registry.Module[plugins.HealthCheck] {
	return registry.Module[plugins.HealthCheck]{Name: "http", Config: func() any { return &Config{} }, New: registry.Logged(New)}
}

// prepared is a validated Config ready to send.
type prepared struct {
	*httpx.Request
	expect []int
	re     *regexp.Regexp
}

func prepare(ctx context.Context, cfg *Config) (*prepared, error) {
	u, err := httpx.ParseURL(cfg.URL)
	if err != nil {
		return nil, err
	}
	method := cfg.Method
	if method == "" {
		method = nethttp.MethodGet
	}
	if !validMethod(method) {
		return nil, fmt.Errorf("%w: method %q is not an HTTP method token", plugins.ErrInvalidArgument, method)
	}
	expect := cfg.ExpectStatus
	if len(expect) == 0 {
		expect = []int{nethttp.StatusOK}
	}
	for _, s := range expect {
		if s < 100 || s > 599 {
			return nil, fmt.Errorf("%w: expect_status %d is not an HTTP status", plugins.ErrInvalidArgument, s)
		}
	}
	var re *regexp.Regexp
	if cfg.BodyRegex != "" {
		if method == nethttp.MethodHead {
			return nil, fmt.Errorf("%w: body_regex cannot be used with HEAD", plugins.ErrInvalidArgument)
		}
		if re, err = regexp.Compile(cfg.BodyRegex); err != nil {
			return nil, fmt.Errorf("%w: body_regex: %w", plugins.ErrInvalidArgument, err)
		}
	}
	r, err := httpx.NewRequest(ctx, method, u, tlsutil.Options{
		CAFile: cfg.CAFile, CertFile: cfg.ClientCert, KeyFile: cfg.ClientKey,
		InsecureSkipVerify: cfg.InsecureSkipVerify,
	})
	if err != nil {
		return nil, err
	}
	for k, v := range cfg.Headers {
		if strings.EqualFold(k, "Host") {
			r.Req.Host = v
			continue
		}
		if !httpx.ValidHeader(k, v) {
			// The value may be a secret: name only the header.
			return nil, fmt.Errorf("%w: header %q has an invalid name or value", plugins.ErrInvalidArgument, k)
		}
		r.Req.Header.Set(k, v)
	}
	return &prepared{Request: r, expect: expect, re: re}, nil
}

// Check sends the configured request once.
func (c *Check) Check(ctx context.Context, req plugins.CheckRequest) (plugins.CheckResult, error) {
	var cfg Config
	if err := plugins.DecodeConfig(req.Config, &cfg); err != nil {
		return plugins.CheckResult{}, fmt.Errorf("http check %q: %w", req.Name, err)
	}
	p, err := prepare(ctx, &cfg)
	if err != nil {
		return plugins.CheckResult{}, fmt.Errorf("http check %q: %w", req.Name, err)
	}
	started := time.Now()
	return c.Done(ctx, "http", req.Name, started, c.run(ctx, p, started), slog.String("target", p.Target)), nil
}

func (c *Check) run(ctx context.Context, p *prepared, started time.Time) plugins.CheckResult {
	details := map[string]string{"target": p.Target}
	status, body, err := p.Fetch(MaxBody)
	if err != nil {
		return c.RequestError(ctx, started, p.Target, err, details)
	}
	details["status"] = strconv.Itoa(status)
	if !slices.Contains(p.expect, status) {
		return c.Result(plugins.Fail,
			fmt.Sprintf("%s: status %s, want %s", p.Target, statusText(status), joinInts(p.expect)), details)
	}
	if p.re != nil && !p.re.Match(body) {
		return c.Result(plugins.Fail,
			fmt.Sprintf("%s: body does not match %s", p.Target, checkutil.Truncate(strconv.Quote(p.re.String()), 120)), details)
	}
	return c.Result(plugins.Pass, fmt.Sprintf("%s: status %d", p.Target, status), details)
}

func statusText(code int) string {
	if t := nethttp.StatusText(code); t != "" {
		return strconv.Itoa(code) + " " + t
	}
	return strconv.Itoa(code)
}

func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, " or ")
}

// validMethod accepts an RFC 9110 token of letters, as every registered
// method is.
func validMethod(m string) bool {
	for _, r := range m {
		if (r < 'A' || r > 'Z') && (r < 'a' || r > 'z') {
			return false
		}
	}
	return m != ""
}
