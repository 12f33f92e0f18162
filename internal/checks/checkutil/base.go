package checkutil

import (
	"context"
	"log/slog"
	"time"

	"github.com/offpeak/offpeak/plugins"
)

// Base is what every built-in check carries: a logger and a clock. A check
// embeds it and builds it with NewBase.
type Base struct {
	// Log receives one debug line per finished check.
	Log *slog.Logger
	// Now stamps results; tests replace it.
	Now func() time.Time
}

// NewBase returns a Base logging to log (nil: nowhere) and stamping
// results with time.Now.
func NewBase(log *slog.Logger) Base {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return Base{Log: log, Now: time.Now}
}

// Result builds a result stamped with b.Now (time.Now when unset); empty
// details become nil.
func (b *Base) Result(o plugins.Outcome, reason string, details map[string]string) plugins.CheckResult {
	if len(details) == 0 {
		details = nil
	}
	now := b.Now
	if now == nil {
		now = time.Now
	}
	return plugins.CheckResult{Outcome: o, Reason: reason, Details: details, Time: now()}
}

// Done logs, at debug level, that the kind check called name finished with
// res after starting at started, and returns res.
func (b *Base) Done(ctx context.Context, kind, name string, started time.Time, res plugins.CheckResult, attrs ...slog.Attr) plugins.CheckResult {
	if b.Log == nil || !b.Log.Enabled(ctx, slog.LevelDebug) {
		return res
	}
	all := make([]slog.Attr, 0, len(attrs)+3)
	all = append(all, slog.String("check", name))
	all = append(all, attrs...)
	all = append(all, slog.String("outcome", string(res.Outcome)), slog.Duration("took", time.Since(started)))
	b.Log.LogAttrs(ctx, slog.LevelDebug, kind+" check done", all...)
	return res
}
