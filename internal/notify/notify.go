// Package notify sends reboot-cycle events to an optional webhook.
//
// Each event is one JSON POST:
//
//	{"event":"rebooted","node":"…","group":"…","time":"2026-03-29T02:30:00Z","reason":"…","details":{…}}
//
// with "User-Agent: offpeak". A 5xx or 429 answer or a connection error is
// retried a few times with exponential backoff; other statuses are final.
// Header values (often credentials) and the URL's user info and query are
// never logged.
package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/offpeak/offpeak/internal/httpx"
	"github.com/offpeak/offpeak/internal/tlsutil"
)

// Kind names what happened.
type Kind string

// The events offpeak reports.
const (
	RebootPlanned  Kind = "reboot-planned"   // slot granted and checks passed; rebooting now
	Rebooted       Kind = "rebooted"         // back up and post-boot checks passed
	PostBootFailed Kind = "post-boot-failed" // post-boot checks failed
	GroupFrozen    Kind = "group-frozen"     // the group was frozen after a failure
)

// Event is the body of one notification.
type Event struct {
	Kind    Kind              `json:"event"`
	Node    string            `json:"node"`
	Group   string            `json:"group"`
	Time    time.Time         `json:"time"` // zero means "now" when sent
	Reason  string            `json:"reason,omitempty"`
	Details map[string]string `json:"details,omitempty"`
}

// MarshalJSON writes Time as RFC 3339 in UTC, to the second, as receivers
// such as chat hooks expect a plain timestamp.
func (e Event) MarshalJSON() ([]byte, error) {
	type plain Event
	return json.Marshal(struct {
		plain
		Time string `json:"time"`
	}{plain(e), e.Time.UTC().Format(time.RFC3339)})
}

// Config configures the webhook. An empty URL disables it. The policy
// loader fills it; it has no file format of its own.
type Config struct {
	URL string
	// CAFile (PEM), when set, is the only trust anchor for the receiver.
	CAFile string
	// Timeout bounds each attempt; default DefaultTimeout.
	Timeout time.Duration
	// Headers are added to every request, e.g. Authorization.
	Headers map[string]string
}

// Defaults for Config and Webhook.
const (
	DefaultTimeout  = 10 * time.Second
	DefaultAttempts = 4
	DefaultBackoff  = 500 * time.Millisecond
	// DefaultTotal bounds one Notify call, all attempts and pauses
	// together: a receiver that hangs must not hold up a reboot for long.
	DefaultTotal = time.Minute
	maxBackoff   = 10 * time.Second
)

// Sentinel errors callers may branch on.
var (
	// ErrRejected: the receiver answered with a status that is not retried
	// (a 4xx other than 429); sending again will not help.
	ErrRejected = errors.New("webhook rejected the event")
	// ErrUndelivered: every attempt failed with a retryable error.
	ErrUndelivered = errors.New("webhook unreachable")
	// ErrConfig: the webhook settings are unusable.
	ErrConfig = errors.New("bad webhook configuration")
)

// Webhook posts events to one URL. A nil *Webhook or one with an empty URL
// drops every event, so callers need no "is it configured" branch.
type Webhook struct {
	log     *slog.Logger
	url     *url.URL
	target  string // safe form of url, for logs and errors
	headers http.Header
	timeout time.Duration
	client  *http.Client
	initErr error

	// Attempts is the total number of tries per event.
	Attempts int
	// Backoff is the wait before the first retry; it doubles each time.
	Backoff time.Duration
	// Total bounds a whole Notify call, retries included.
	Total time.Duration
	// Sleep waits between attempts and returns early with ctx's error;
	// tests replace it.
	Sleep func(ctx context.Context, d time.Duration) error
	// Now fills a zero Event.Time; tests replace it.
	Now func() time.Time
}

// New returns a webhook for cfg. Configuration problems (bad URL, unusable
// CA file) are logged here and returned, wrapping ErrConfig, by every
// Notify call, so an agent can start without its notifier.
func New(cfg Config, log *slog.Logger) *Webhook {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	w := &Webhook{
		log:      log,
		timeout:  cfg.Timeout,
		Attempts: DefaultAttempts,
		Backoff:  DefaultBackoff,
		Total:    DefaultTotal,
		Sleep:    sleepCtx,
		Now:      time.Now,
	}
	if w.timeout <= 0 {
		w.timeout = DefaultTimeout
	}
	if cfg.URL == "" {
		return w
	}
	w.initErr = w.setup(cfg)
	if w.initErr != nil {
		log.Warn("webhook notifications disabled", "err", w.initErr)
	}
	return w
}

func (w *Webhook) setup(cfg Config) error {
	u, err := httpx.ParseURL(cfg.URL)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	w.url, w.target = u, httpx.SafeURL(u)
	w.headers = http.Header{}
	for k, v := range cfg.Headers {
		if !httpx.ValidHeader(k, v) {
			// The value may be a secret: name only the header.
			return fmt.Errorf("%w: header %q has an invalid name or value", ErrConfig, k)
		}
		w.headers.Set(k, v)
	}
	tlsCfg, err := tlsutil.Client(tlsutil.Options{CAFile: cfg.CAFile})
	if err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	w.client = httpx.NewClient(tlsCfg)
	return nil
}

// Notify sends ev, retrying transient failures, and returns once it was
// accepted (2xx), rejected, attempts ran out, Total passed, or ctx ended.
func (w *Webhook) Notify(ctx context.Context, ev Event) error {
	if w == nil || (w.url == nil && w.initErr == nil) {
		return nil
	}
	if w.initErr != nil {
		return w.initErr
	}
	if w.Total > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, w.Total, fmt.Errorf("%w: gave up after %s in all", context.DeadlineExceeded, w.Total))
		defer cancel()
	}
	if ev.Time.IsZero() {
		ev.Time = w.Now()
	}
	body, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("encoding %s event: %w", ev.Kind, err)
	}
	attempts := max(w.Attempts, 1)
	backoff := w.Backoff
	var last error
	for i := range attempts {
		if i > 0 {
			if err := w.Sleep(ctx, backoff); err != nil {
				if ctx.Err() != nil {
					err = context.Cause(ctx)
				}
				return fmt.Errorf("%w: %s: giving up after %d attempts: %w (last: %w)", ErrUndelivered, w.target, i, err, last)
			}
			backoff = min(backoff*2, maxBackoff)
		}
		retry, err := w.send(ctx, body)
		if err == nil {
			w.log.LogAttrs(ctx, slog.LevelDebug, "webhook delivered", slog.String("event", string(ev.Kind)), slog.String("url", w.target), slog.Int("attempt", i+1))
			return nil
		}
		if !retry {
			return err
		}
		last = err
		if ctx.Err() != nil {
			return fmt.Errorf("%w: %s: %w (last: %w)", ErrUndelivered, w.target, context.Cause(ctx), last)
		}
		w.log.LogAttrs(ctx, slog.LevelWarn, "webhook attempt failed", slog.String("event", string(ev.Kind)), slog.String("url", w.target), slog.Int("attempt", i+1), slog.String("err", err.Error()))
	}
	return fmt.Errorf("%w: %s: %w", ErrUndelivered, w.target, last)
}

// send makes one attempt and reports whether a failure is worth retrying.
func (w *Webhook) send(ctx context.Context, body []byte) (retry bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url.String(), bytes.NewReader(body))
	if err != nil {
		return false, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	for k, v := range w.headers {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "offpeak")
	started := time.Now()
	resp, err := w.client.Do(req)
	if err != nil {
		return true, errors.New(httpx.TransportError(ctx, started, err))
	}
	defer resp.Body.Close()
	// Drain a little so the answer is complete; the content is not used.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return false, nil
	case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests:
		return true, errors.New("status " + strconv.Itoa(resp.StatusCode))
	default:
		return false, fmt.Errorf("%w: %s: status %d", ErrRejected, w.target, resp.StatusCode)
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
