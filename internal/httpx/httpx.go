// Package httpx holds what offpeak's outgoing HTTP calls share (the
// webhook notifier, the http and prometheus checks): URL parsing that never
// echoes credentials, a safe form of a URL for logs and reasons, header
// validation, a client that takes no proxy from the environment and
// follows no redirect, one request sent with its body read up to a limit,
// and the reason a call failed or its context ended. Client TLS settings
// come from internal/tlsutil.
package httpx

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/offpeak/offpeak/internal/tlsutil"
	"github.com/offpeak/offpeak/plugins"
)

// CtxReason explains why ctx ended: "timed out after D" for a deadline,
// "canceled" otherwise. started is when the call began; D is the time the
// caller allowed (deadline − started) so the reason names the configured
// timeout rather than a jittery elapsed time. It returns "" while ctx is live.
func CtxReason(ctx context.Context, started time.Time) string {
	err := ctx.Err()
	switch {
	case err == nil:
		return ""
	case errors.Is(err, context.DeadlineExceeded):
		d := time.Since(started)
		if dl, ok := ctx.Deadline(); ok && dl.After(started) {
			d = dl.Sub(started)
		}
		return "timed out after " + roundDuration(d).String()
	default:
		return "canceled"
	}
}

func roundDuration(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(time.Millisecond)
	default:
		return d
	}
}

// SafeURL renders u for logs and reasons: scheme, host and path only. User
// info and the query are dropped because either may carry a secret.
func SafeURL(u *url.URL) string {
	if u == nil {
		return ""
	}
	c := url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path, RawPath: u.RawPath}
	return c.String()
}

// ParseURL parses raw and requires an absolute http or https URL with a
// host. Errors wrap plugins.ErrInvalidArgument and never echo user info.
func ParseURL(raw string) (*url.URL, error) {
	if raw == "" {
		return nil, fmt.Errorf("%w: url is required", plugins.ErrInvalidArgument)
	}
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error would repeat the whole string, password included.
		return nil, fmt.Errorf("%w: url does not parse", plugins.ErrInvalidArgument)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("%w: url scheme must be http or https, not %q", plugins.ErrInvalidArgument, u.Scheme)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("%w: url has no host", plugins.ErrInvalidArgument)
	}
	return u, nil
}

// NewClient returns a client for one check or notification. It uses no
// proxy from the environment (checks usually target local services, and the
// agent's environment is not the operator's), keeps no idle connections and
// does not follow redirects, so an expected 3xx can be asserted and
// credentials are not forwarded to another host.
func NewClient(tlsCfg *tls.Config) *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:               nil,
			TLSClientConfig:     tlsCfg,
			DisableKeepAlives:   true,
			ForceAttemptHTTP2:   true,
			TLSHandshakeTimeout: 10 * time.Second,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// ErrText explains err, or names the end of ctx instead ("timed out after
// D", "canceled") when ctx ended, since err then only repeats that noisily.
func ErrText(ctx context.Context, started time.Time, err error) string {
	if r := CtxReason(ctx, started); r != "" {
		return r
	}
	return err.Error()
}

// TransportError describes a failed HTTP round trip like ErrText, without
// the URL (which the caller adds in its safe form).
func TransportError(ctx context.Context, started time.Time, err error) string {
	return ErrText(ctx, started, withoutURL(err))
}

// withoutURL unwraps a *url.Error, whose text repeats the full URL with
// its user info and query.
func withoutURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// ValidHeader reports whether k is an RFC 9110 field name and v a value
// that cannot split the header block. Errors about a bad header should
// name k only: v is often a credential.
func ValidHeader(k, v string) bool {
	if k == "" || strings.ContainsAny(v, "\r\n\x00") {
		return false
	}
	for _, r := range k {
		if r <= ' ' || r >= 0x7f || strings.ContainsRune(`"(),/:;<=>?@[\]{}`, r) {
			return false
		}
	}
	return true
}

// Request is one request, sent once.
type Request struct {
	Req *http.Request
	// Target is the method and the safe form of the URL, for reasons and
	// logs.
	Target string
	Client *http.Client
}

// NewRequest prepares method to u, sent with "User-Agent: offpeak" by a
// client from NewClient whose TLS settings are tlsOpts. ctx bounds the
// request. Errors wrap plugins.ErrInvalidArgument.
func NewRequest(ctx context.Context, method string, u *url.URL, tlsOpts tlsutil.Options) (*Request, error) {
	tlsCfg, err := tlsutil.Client(tlsOpts)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("%w: request: %w", plugins.ErrInvalidArgument, withoutURL(err))
	}
	req.Header.Set("User-Agent", "offpeak")
	return &Request{Req: req, Target: method + " " + SafeURL(u), Client: NewClient(tlsCfg)}, nil
}

// Fetch sends the request once and returns the answer's status and at
// most limit bytes of its body.
func (r *Request) Fetch(limit int64) (status int, body []byte, err error) {
	resp, err := r.Client.Do(r.Req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(io.LimitReader(resp.Body, limit))
	if err != nil {
		return 0, nil, fmt.Errorf("reading the body: %w", err)
	}
	return resp.StatusCode, body, nil
}
