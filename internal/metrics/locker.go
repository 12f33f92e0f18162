package metrics

import (
	"context"
	"errors"
	"time"

	"github.com/offpeak/offpeak/plugins"
	"github.com/offpeak/offpeak/scheduler"
)

var lockerMethods = []string{"acquire", "release", "status", "wait", "freeze"}

// Locker wraps a scheduler.Locker and records the duration and failures of
// every call by method.
type Locker struct {
	next scheduler.Locker
	m    *Metrics
}

// WrapLocker returns l instrumented; a nil l stays nil (strategies without
// a lock have no locker).
func (m *Metrics) WrapLocker(l scheduler.Locker) scheduler.Locker {
	if l == nil {
		return nil
	}
	return &Locker{next: l, m: m}
}

// record observes one call. A Wait ended by its context is the loop moving
// on, not a locker failure.
func (l *Locker) record(ctx context.Context, method string, start time.Time, err error) {
	l.m.lockDur.WithLabelValues(method).Observe(l.m.now().Sub(start).Seconds())
	if err == nil {
		l.m.setLockerUp(true)
		return
	}
	if method == "wait" && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return
	}
	l.m.lockErrs.WithLabelValues(method).Inc()
	l.m.setLockerUp(answered(err))
}

// answered reports whether err is the lock service's own answer (not the
// holder, frozen, a lost race, a bad request) rather than no answer at all.
func answered(err error) bool {
	for _, e := range []error{plugins.ErrNotHolder, plugins.ErrFrozen, plugins.ErrConflict, plugins.ErrInvalidArgument} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func (m *Metrics) setLockerUp(up bool) {
	m.mu.Lock()
	m.lockerUp = &up
	m.mu.Unlock()
}

func (l *Locker) Acquire(ctx context.Context, req plugins.AcquireRequest) (res plugins.AcquireResult, err error) {
	defer func(start time.Time) { l.record(ctx, "acquire", start, err) }(l.m.now())
	return l.next.Acquire(ctx, req)
}

func (l *Locker) Release(ctx context.Context, req plugins.ReleaseRequest) (err error) {
	defer func(start time.Time) { l.record(ctx, "release", start, err) }(l.m.now())
	return l.next.Release(ctx, req)
}

func (l *Locker) Status(ctx context.Context, group string) (st plugins.LockState, err error) {
	defer func(start time.Time) { l.record(ctx, "status", start, err) }(l.m.now())
	return l.next.Status(ctx, group)
}

func (l *Locker) Wait(ctx context.Context, group string, revision uint64) (st plugins.LockState, err error) {
	defer func(start time.Time) { l.record(ctx, "wait", start, err) }(l.m.now())
	return l.next.Wait(ctx, group, revision)
}

func (l *Locker) Freeze(ctx context.Context, req plugins.FreezeRequest) (err error) {
	defer func(start time.Time) { l.record(ctx, "freeze", start, err) }(l.m.now())
	return l.next.Freeze(ctx, req)
}
