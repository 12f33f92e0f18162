// Package checkutil holds the pieces the built-in health checks and the
// webhook notifier share: the logger and clock every check carries, result
// building, context-end reasons, text truncation, URL redaction, header
// validation, HTTP and TLS client setup, and D-Bus connections.
package checkutil

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/offpeak/offpeak/internal/tlsutil"
	"github.com/offpeak/offpeak/plugins"
)

// CtxReason explains why ctx ended: "timed out after D" for a deadline,
// "canceled" otherwise. started is when the check began; D is the time the
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

// Truncate shortens s to at most n bytes without splitting a UTF-8
// sequence, marking the cut with "…". Invalid UTF-8 is replaced first, so
// the result is always valid text for logs and JSON.
func Truncate(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	const mark = "…"
	if n <= len(mark) {
		return ""
	}
	cut := n - len(mark)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + mark
}

// TruncateHead keeps the last n bytes of s (the end of a command's output
// is usually what explains a failure), marking the cut with "…".
func TruncateHead(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	const mark = "…"
	if n <= len(mark) {
		return ""
	}
	start := len(s) - (n - len(mark))
	for start < len(s) && !utf8.RuneStart(s[start]) {
		start++
	}
	return mark + s[start:]
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

// ParseHTTPURL parses raw and requires an absolute http or https URL with a
// host. Errors wrap plugins.ErrInvalidArgument and never echo user info.
func ParseHTTPURL(raw string) (*url.URL, error) {
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

// TLSOptions selects the client side of TLS.
type TLSOptions = tlsutil.Options

// TLSConfig turns o into a tls.Config; see tlsutil.Client.
func TLSConfig(o TLSOptions) (*tls.Config, error) { return tlsutil.Client(o) }

// NewHTTPClient returns a client for one check or notification. It uses no
// proxy from the environment (checks usually target local services, and the
// agent's environment is not the operator's), keeps no idle connections and
// does not follow redirects, so an expected 3xx can be asserted and
// credentials are not forwarded to another host.
func NewHTTPClient(tlsCfg *tls.Config) *http.Client {
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
