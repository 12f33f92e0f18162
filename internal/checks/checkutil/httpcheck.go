package checkutil

import (
	"context"
	"time"

	"github.com/offpeak/offpeak/internal/httpx"
	"github.com/offpeak/offpeak/plugins"
)

// RequestError is the Outcome Error result of a request to target that got
// no usable answer. When ctx ended the reason starts with that ("timed out
// after 5s: GET https://…"); otherwise it is target and err, without the
// URL err may repeat, cut to 400 bytes.
func (b *Base) RequestError(ctx context.Context, started time.Time, target string, err error, details map[string]string) plugins.CheckResult {
	if r := httpx.CtxReason(ctx, started); r != "" {
		return b.Result(plugins.Error, r+": "+target, details)
	}
	return b.Result(plugins.Error, Truncate(target+": "+httpx.TransportError(ctx, started, err), 400), details)
}
