package checkutil

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/offpeak/offpeak/plugins"
)

// Request is the one request an HTTP-based check sends.
type Request struct {
	Req *http.Request
	// Target is the method and the safe form of the URL, for reasons and
	// logs.
	Target string
	Client *http.Client
}

// NewRequest prepares method to u, sent with "User-Agent: offpeak" by a
// client from NewHTTPClient whose TLS settings are tlsOpts. ctx bounds the
// request. Errors wrap plugins.ErrInvalidArgument.
func NewRequest(ctx context.Context, method string, u *url.URL, tlsOpts TLSOptions) (*Request, error) {
	tlsCfg, err := TLSConfig(tlsOpts)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("%w: request: %w", plugins.ErrInvalidArgument, withoutURL(err))
	}
	req.Header.Set("User-Agent", "offpeak")
	return &Request{Req: req, Target: method + " " + SafeURL(u), Client: NewHTTPClient(tlsCfg)}, nil
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

// RequestError is the Outcome Error result of a request to target that got
// no usable answer. When ctx ended the reason starts with that ("timed out
// after 5s: GET https://…"); otherwise it is target and err, without the
// URL err may repeat, cut to 400 bytes.
func (b *Base) RequestError(ctx context.Context, started time.Time, target string, err error, details map[string]string) plugins.CheckResult {
	if r := CtxReason(ctx, started); r != "" {
		return b.Result(plugins.Error, r+": "+target, details)
	}
	return b.Result(plugins.Error, Truncate(target+": "+withoutURL(err).Error(), 400), details)
}
