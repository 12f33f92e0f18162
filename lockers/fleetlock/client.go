package fleetlock

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/offpeak/offpeak/internal/redact"
	"github.com/offpeak/offpeak/internal/registry"
	"github.com/offpeak/offpeak/internal/tlsutil"
	"github.com/offpeak/offpeak/plugins"
)

// Client defaults.
const (
	DefaultRequestTimeout = 30 * time.Second
	// DefaultPollInterval is how often Wait asks again against a server
	// without offpeak's wait endpoint. FleetLock has no way to be told of a
	// freed slot, so clients poll; a few minutes keeps a fleet's load low.
	DefaultPollInterval = 5 * time.Minute
	DefaultMaxRetries   = 4
	retryBase           = 500 * time.Millisecond
	retryCap            = 30 * time.Second
	// longPoll is the wait timeout asked of offpeak's server.
	longPoll = 50 * time.Second
)

// ErrNotSupported: the server speaks plain FleetLock and lacks offpeak's
// extension endpoints. Errors carrying it also match plugins.ErrUnavailable.
var ErrNotSupported = errors.New("not supported by the FleetLock protocol")

// Config is the policy's [lock.config] table for plugin "fleetlock".
type Config struct {
	// URL is the server's base URL; a trailing slash does not matter.
	URL string `json:"url"`
	// CAFile alone gives CA-only trust; CertFile/KeyFile add a client
	// certificate for servers that require one.
	CAFile             string `json:"ca_file"`
	CertFile           string `json:"cert_file"`
	KeyFile            string `json:"key_file"`
	ServerName         string `json:"server_name"`
	InsecureSkipVerify bool   `json:"insecure_skip_verify"`
	// Token (or the first line of TokenFile) is sent as a bearer token; an
	// offpeak server needs it for set-max, freeze and thaw. Never logged.
	Token          string           `json:"token"`
	TokenFile      string           `json:"token_file"`
	RequestTimeout plugins.Duration `json:"request_timeout"`
	PollInterval   plugins.Duration `json:"poll_interval"`
	// MaxRetries is how often a transient failure (connection refused,
	// 5xx) is retried, with capped, jittered exponential backoff.
	MaxRetries *int `json:"max_retries"`
}

// SecretKeys lists the settings `policy show` must not print (user info
// and query values of url are hidden as in every URL).
func (Config) SecretKeys() []string { return []string{"token"} }

// Locker is a FleetLock client implementing plugins.Locker.
type Locker struct {
	log *slog.Logger
	// random and sleep are injected so backoff is deterministic in tests.
	random func() float64
	sleep  func(ctx context.Context, d time.Duration) error

	mu       sync.Mutex
	base     *url.URL
	hc       *http.Client
	token    string
	timeout  time.Duration
	poll     time.Duration
	retries  int
	localRev uint64
}

// New returns an unconfigured FleetLock client.
func New(log *slog.Logger) plugins.Locker { return newLocker(log) }

func newLocker(log *slog.Logger) *Locker {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Locker{log: log, random: rand.Float64, sleep: sleepCtx}
}

// Module registers the fleetlock locker with offpeak's built-ins.
func Module() registry.Module[plugins.Locker] {
	return registry.Module[plugins.Locker]{Name: "fleetlock", Config: func() any { return &Config{} }, New: registry.Logged(New)}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Configure validates the settings and prepares the HTTP client.
func (l *Locker) Configure(_ context.Context, raw json.RawMessage) error {
	var cfg Config
	if err := plugins.DecodeConfig(raw, &cfg); err != nil {
		return err
	}
	base, err := url.Parse(cfg.URL)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return fmt.Errorf("%w: fleetlock url %q must be an absolute http(s) URL", plugins.ErrInvalidArgument, redact.String(cfg.URL))
	}
	base.Path = strings.TrimSuffix(base.Path, "/")
	base.RawQuery, base.Fragment = "", ""
	tc, err := tlsutil.Optional("fleetlock", tlsutil.Options{CAFile: cfg.CAFile, CertFile: cfg.CertFile, KeyFile: cfg.KeyFile,
		ServerName: cfg.ServerName, InsecureSkipVerify: cfg.InsecureSkipVerify})
	if err != nil {
		return err
	}
	if tc != nil && base.Scheme != "https" {
		return fmt.Errorf("%w: fleetlock TLS settings given but url %s is not https", plugins.ErrInvalidArgument, redact.String(cfg.URL))
	}
	token := cfg.Token
	if cfg.TokenFile != "" {
		if token != "" {
			return fmt.Errorf("%w: fleetlock token and token_file are exclusive", plugins.ErrInvalidArgument)
		}
		b, err := os.ReadFile(cfg.TokenFile)
		if err != nil {
			return fmt.Errorf("%w: fleetlock token_file: %w", plugins.ErrInvalidArgument, err)
		}
		token, _, _ = strings.Cut(strings.TrimSpace(string(b)), "\n")
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = plugins.Duration(DefaultRequestTimeout)
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = plugins.Duration(DefaultPollInterval)
	}
	retries := DefaultMaxRetries
	if cfg.MaxRetries != nil {
		if *cfg.MaxRetries < 0 {
			return fmt.Errorf("%w: fleetlock max_retries %d is negative", plugins.ErrInvalidArgument, *cfg.MaxRetries)
		}
		retries = *cfg.MaxRetries
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	l.mu.Lock()
	l.base, l.token, l.timeout, l.poll, l.retries = base, token, cfg.RequestTimeout.D(), cfg.PollInterval.D(), retries
	// A redirect is not followed: the FleetLock header is there so that a
	// request is answered where it was sent, and a redirected POST turns
	// into a GET of some page.
	l.hc = &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	l.mu.Unlock()
	l.log.Debug("fleetlock client configured", "url", base.Redacted(), "tls", tc != nil, "client_cert", cfg.CertFile != "", "token", token != "")
	return nil
}

// Close drops idle connections.
func (l *Locker) Close() error {
	l.mu.Lock()
	hc := l.hc
	l.mu.Unlock()
	if hc != nil {
		hc.CloseIdleConnections()
	}
	return nil
}

type settings struct {
	base    *url.URL
	hc      *http.Client
	token   string
	timeout time.Duration
	poll    time.Duration
	retries int
}

func (l *Locker) settings() (settings, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.hc == nil {
		return settings{}, fmt.Errorf("%w: fleetlock locker used before Configure", plugins.ErrInvalidArgument)
	}
	return settings{l.base, l.hc, l.token, l.timeout, l.poll, l.retries}, nil
}

func (l *Locker) nextLocalRev() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.localRev++
	return l.localRev
}

// reply is one HTTP answer.
type reply struct {
	code  int
	body  []byte
	ctype string
	err   *ErrorReply // decoded for non-200
}

func (r reply) json() bool { return strings.HasPrefix(r.ctype, "application/json") }

// maxQuote bounds how much of an unrecognised answer an error quotes.
const maxQuote = 160

// quote is a bounded prefix of the answer's body, escaped: it comes from
// whatever answered and ends up in logs and status.
func (r reply) quote() string {
	b := bytes.TrimSpace(r.body)
	if len(b) == 0 {
		return http.StatusText(r.code) + " (empty body)"
	}
	more := ""
	if len(b) > maxQuote {
		b, more = b[:maxQuote], "…"
	}
	return strconv.QuoteToASCII(string(b)) + more
}

// grant checks a 200 answer to pre-reboot and returns offpeak's reply when
// the server sent one. A grant is only what a FleetLock server says: an
// empty body (the protocol, airlock), offpeak's reply with granted true for
// the group asked, or a FleetLock reply object {"kind":…,"value":…} that
// some servers send with their 200. Anything else, a web server's welcome
// page behind a wrong URL say, is an error quoting the answer.
func (r reply) grant(group string) (*PreRebootReply, error) {
	if len(bytes.TrimSpace(r.body)) == 0 {
		return nil, nil
	}
	var fields map[string]json.RawMessage
	if json.Unmarshal(r.body, &fields) == nil && fields != nil {
		if _, ok := fields["granted"]; ok {
			var ext PreRebootReply
			if json.Unmarshal(r.body, &ext) == nil && ext.Granted && ext.State.Group == group {
				return &ext, nil
			}
		} else if e, ok := fields["kind"]; ok {
			var kind string
			if json.Unmarshal(e, &kind) == nil && kind != "" {
				return nil, nil
			}
		}
	}
	return nil, r.notFleetLock("pre-reboot")
}

// released checks a 200 answer to steady-state like grant does; it reports
// false when offpeak's server says the id held no slot.
func (r reply) released() (bool, error) {
	if len(bytes.TrimSpace(r.body)) == 0 {
		return true, nil
	}
	var fields map[string]json.RawMessage
	if json.Unmarshal(r.body, &fields) == nil && fields != nil {
		if _, ok := fields["released"]; ok {
			var ext SteadyStateReply
			if json.Unmarshal(r.body, &ext) == nil && ext.State.Group != "" {
				return ext.Released, nil
			}
		} else if e, ok := fields["kind"]; ok {
			var kind string
			if json.Unmarshal(e, &kind) == nil && kind != "" {
				return true, nil
			}
		}
	}
	return false, r.notFleetLock("steady-state")
}

func (r reply) notFleetLock(op string) error {
	ct := r.ctype
	if ct == "" {
		ct = "no content type"
	}
	return &replyError{op: op, code: r.code, value: fmt.Sprintf("not a FleetLock answer (%s): %s; is the url right?", strconv.QuoteToASCII(ct), r.quote()),
		sentinel: plugins.ErrUnavailable}
}

// replyError is a non-200 answer turned into an error; it names the kind
// and value so the operator sees the server's reason.
type replyError struct {
	op, kind, value string
	code            int
	sentinel        error
}

func (e *replyError) Error() string {
	if e.kind == "" {
		return fmt.Sprintf("fleetlock %s: HTTP %d: %s", e.op, e.code, e.value)
	}
	return fmt.Sprintf("fleetlock %s: HTTP %d: %s: %s", e.op, e.code, e.kind, e.value)
}

func (e *replyError) Unwrap() error { return e.sentinel }

// do sends one request, retrying transient failures: connection errors and
// 5xx replies, except airlock's 5xx failed_lock on pre-reboot ("no slot").
func (l *Locker) do(ctx context.Context, s settings, method, path string, query url.Values, body any, timeout time.Duration) (reply, error) {
	var payload []byte
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return reply{}, err
		}
		payload = b
	}
	u := *s.base
	u.Path = s.base.Path + path
	u.RawQuery = query.Encode()
	for attempt := 0; ; attempt++ {
		r, err := l.once(ctx, s, method, u.String(), payload, timeout)
		if err != nil {
			if ctx.Err() != nil {
				return reply{}, ctx.Err()
			}
			err = fmt.Errorf("fleetlock %s %s: %w: %w", method, path, plugins.ErrUnavailable, err)
		}
		// A 5xx failed_lock on pre-reboot is airlock's "no slot", not a fault.
		noSlot := path == PathPreReboot && r.err != nil && r.err.Kind == KindFailedLock
		transient := err != nil || (r.code >= 500 && !noSlot)
		if !transient || attempt >= s.retries {
			return r, err
		}
		d := backoff(attempt, l.random)
		l.log.Debug("fleetlock request failed, retrying", "path", path, "attempt", attempt+1, "delay", d, "error", err, "status", r.code)
		if err := l.sleep(ctx, d); err != nil {
			return reply{}, err
		}
	}
}

// backoff is capped exponential with "equal jitter": half fixed, half random,
// so retries of a fleet spread out but never collapse to zero.
func backoff(attempt int, random func() float64) time.Duration {
	d := retryBase << min(attempt, 16)
	if d > retryCap || d <= 0 {
		d = retryCap
	}
	return d/2 + time.Duration(random()*float64(d/2))
}

func (l *Locker) once(ctx context.Context, s settings, method, u string, payload []byte, timeout time.Duration) (reply, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var rd io.Reader
	if payload != nil {
		rd = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return reply{}, err
	}
	req.Header.Set(HeaderProtocol, "true")
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if s.token != "" {
		req.Header.Set("Authorization", "Bearer "+s.token)
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return reply{}, err
	}
	r := reply{code: resp.StatusCode, body: b, ctype: resp.Header.Get("Content-Type")}
	if r.code != http.StatusOK {
		var e ErrorReply
		// airlock sends its JSON error as text/plain, so decode by content.
		if json.Unmarshal(bytes.TrimSpace(b), &e) == nil && e.Kind != "" {
			r.err = &e
		}
	}
	return r, nil
}

// failure turns a non-200 reply into an error with the right sentinel.
func failure(op string, r reply) error {
	e := &replyError{op: op, code: r.code}
	if r.err != nil {
		e.kind, e.value = r.err.Kind, r.err.Value
	} else {
		e.value = "unexpected reply: " + r.quote()
	}
	switch {
	case e.kind == KindFrozen:
		e.sentinel = plugins.ErrFrozen
	case e.kind == KindNodeIDCollision:
		e.sentinel = plugins.ErrNodeIDCollision
	case e.kind == KindInvalidIdentity, e.kind == KindUnknownGroup, e.kind == KindBadRequest:
		e.sentinel = plugins.ErrInvalidArgument
	case e.kind == KindFailedLock && r.code >= 500:
		e.sentinel = plugins.ErrConflict
	case r.code >= 500:
		e.sentinel = plugins.ErrUnavailable
	}
	return e
}

func notSupported(op string) error {
	return fmt.Errorf("fleetlock %s: %w (the server lacks offpeak's extension): %w", op, ErrNotSupported, plugins.ErrUnavailable)
}

// Acquire posts pre-reboot. failed_lock, outside_maintenance_window and
// group_frozen are refusals (Granted false, no error); for group_frozen the
// returned state is marked Frozen. A plain FleetLock server tells no counts:
// its answers come back as an Opaque state with the poll interval.
//
// The request carries no clock and no reclaim flag: whether a holder is
// stale is the server's decision alone.
func (l *Locker) Acquire(ctx context.Context, req plugins.AcquireRequest) (plugins.AcquireResult, error) {
	if err := plugins.ValidateAcquire(req); err != nil {
		return plugins.AcquireResult{}, err
	}
	s, err := l.settings()
	if err != nil {
		return plugins.AcquireResult{}, err
	}
	h := req.Holder
	body := Request{
		ClientParams: ClientParams{ID: req.Holder.ID, Group: req.Group},
		Offpeak:      &RequestExt{Holder: &h, Slots: req.Slots, PreviousBootID: req.PreviousBootID},
	}
	r, err := l.do(ctx, s, http.MethodPost, PathPreReboot, nil, body, s.timeout)
	if err != nil {
		return plugins.AcquireResult{}, err
	}
	opaque := func(st plugins.LockState) plugins.LockState {
		st.Group, st.Revision, st.Opaque, st.PollInterval = req.Group, l.nextLocalRev(), true, s.poll
		return st
	}
	if r.code == http.StatusOK {
		ext, err := r.grant(req.Group)
		if err != nil {
			return plugins.AcquireResult{}, err
		}
		if ext != nil {
			return plugins.AcquireResult{Granted: true, State: ext.State, Reclaimed: ext.Reclaimed}, nil
		}
		return plugins.AcquireResult{Granted: true, State: opaque(plugins.LockState{Holders: []plugins.Holder{h}})}, nil
	}
	if r.err != nil && (r.err.Kind == KindFailedLock || r.err.Kind == KindOutsideWindow || r.err.Kind == KindFrozen) {
		st := opaque(plugins.LockState{Frozen: r.err.Kind == KindFrozen, Answer: r.err.Kind + ": " + r.err.Value})
		if st.Frozen {
			st.FrozenReason = r.err.Value
		}
		if r.err.State != nil {
			st = *r.err.State
		}
		l.log.Debug("fleetlock slot refused", "group", req.Group, "kind", r.err.Kind, "reason", r.err.Value)
		return plugins.AcquireResult{State: st}, nil
	}
	err = failure("pre-reboot", r)
	if r.err != nil && r.err.State != nil {
		return plugins.AcquireResult{State: *r.err.State}, err
	}
	return plugins.AcquireResult{}, err
}

// Release posts steady-state. An offpeak server tells whether the id held
// a slot (ErrNotHolder otherwise); a plain server does not, and its 200 is
// success. A 200 that is no FleetLock answer is an error.
func (l *Locker) Release(ctx context.Context, req plugins.ReleaseRequest) error {
	if err := validate(req.Group, req.ID); err != nil {
		return err
	}
	s, err := l.settings()
	if err != nil {
		return err
	}
	body := Request{ClientParams: ClientParams{ID: req.ID, Group: req.Group}}
	if req.Reason != "" {
		body.Offpeak = &RequestExt{Reason: req.Reason}
	}
	r, err := l.do(ctx, s, http.MethodPost, PathSteadyState, nil, body, s.timeout)
	if err != nil {
		return err
	}
	if r.code != http.StatusOK {
		return failure("steady-state", r)
	}
	released, err := r.released()
	if err != nil {
		return err
	}
	if !released {
		return fmt.Errorf("fleetlock: %q in group %q: %w", req.ID, req.Group, plugins.ErrNotHolder)
	}
	return nil
}

// getState calls an extension endpoint that answers with a LockState.
func (l *Locker) getState(ctx context.Context, s settings, op, method, path string, q url.Values, body any, timeout time.Duration) (plugins.LockState, error) {
	r, err := l.do(ctx, s, method, path, q, body, timeout)
	if err != nil {
		return plugins.LockState{}, err
	}
	if r.code == http.StatusNotFound && (r.err == nil || r.err.Kind == KindNotFound) {
		return plugins.LockState{}, notSupported(op)
	}
	if r.code != http.StatusOK {
		return plugins.LockState{}, failure(op, r)
	}
	var st plugins.LockState
	if err := json.Unmarshal(r.body, &st); err != nil || st.Group == "" {
		return plugins.LockState{}, &replyError{op: op, code: r.code, value: "reply is not a lock state", sentinel: plugins.ErrUnavailable}
	}
	return st, nil
}

// Status needs offpeak's status endpoint; plain FleetLock has none.
func (l *Locker) Status(ctx context.Context, group string) (plugins.LockState, error) {
	if err := validate(group, "-"); err != nil {
		return plugins.LockState{}, err
	}
	s, err := l.settings()
	if err != nil {
		return plugins.LockState{}, err
	}
	return l.getState(ctx, s, "status", http.MethodGet, PathStatus, url.Values{"group": {group}}, nil, s.timeout)
}

// Wait long-polls offpeak's wait endpoint. Against a plain FleetLock
// server it sleeps poll_interval, jittered, and returns an Opaque state
// with a new local revision, so the caller asks pre-reboot again: FleetLock
// clients poll. (The agent does not call Wait for an Opaque state; it asks
// again after the state's PollInterval on its own clock.)
func (l *Locker) Wait(ctx context.Context, group string, revision uint64) (plugins.LockState, error) {
	if err := validate(group, "-"); err != nil {
		return plugins.LockState{}, err
	}
	s, err := l.settings()
	if err != nil {
		return plugins.LockState{}, err
	}
	poll := min(longPoll, s.poll)
	for {
		q := url.Values{"group": {group}, "revision": {strconv.FormatUint(revision, 10)}, "timeout": {poll.String()}}
		st, err := l.getState(ctx, s, "wait", http.MethodGet, PathWait, q, nil, s.timeout+poll)
		if errors.Is(err, ErrNotSupported) {
			if err := l.sleep(ctx, jitter(s.poll, l.random())); err != nil {
				return plugins.LockState{}, err
			}
			return plugins.LockState{Group: group, Revision: l.nextLocalRev(), Opaque: true, PollInterval: s.poll}, nil
		}
		if err != nil {
			return plugins.LockState{}, err
		}
		if st.Revision != revision {
			return st, nil
		}
		if ctx.Err() != nil {
			return plugins.LockState{}, ctx.Err()
		}
	}
}

// SetSlots needs offpeak's server and its admin token.
func (l *Locker) SetSlots(ctx context.Context, group string, slots int) (plugins.LockState, error) {
	if err := validate(group, "-"); err != nil {
		return plugins.LockState{}, err
	}
	if slots < 0 {
		return plugins.LockState{}, fmt.Errorf("%w: slot count %d is negative", plugins.ErrInvalidArgument, slots)
	}
	s, err := l.settings()
	if err != nil {
		return plugins.LockState{}, err
	}
	return l.getState(ctx, s, "set slots", http.MethodPost, PathSlots, nil, SlotsRequest{Group: group, Slots: slots}, s.timeout)
}

// Freeze needs offpeak's server and its admin token.
func (l *Locker) Freeze(ctx context.Context, req plugins.FreezeRequest) error {
	if err := validate(req.Group, "-"); err != nil {
		return err
	}
	s, err := l.settings()
	if err != nil {
		return err
	}
	_, err = l.getState(ctx, s, "freeze", http.MethodPost, PathFreeze, nil, req, s.timeout)
	return err
}

// Thaw needs offpeak's server and its admin token.
func (l *Locker) Thaw(ctx context.Context, group string) error {
	if err := validate(group, "-"); err != nil {
		return err
	}
	s, err := l.settings()
	if err != nil {
		return err
	}
	_, err = l.getState(ctx, s, "thaw", http.MethodPost, PathThaw, nil, GroupRequest{Group: group}, s.timeout)
	return err
}

func validate(group, id string) error {
	if err := plugins.ValidateName("group", group); err != nil {
		return err
	}
	return plugins.ValidateName("holder id", id)
}

// jitter spreads a poll interval over ±10% with r in [0, 1), so a fleet
// that was refused together does not ask again together.
func jitter(d time.Duration, r float64) time.Duration {
	return d - d/10 + time.Duration(r*float64(d/5))
}
