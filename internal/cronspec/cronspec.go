// Package cronspec parses the cron specs of maintenance windows: robfig/cron
// five-field specs and @daily-style descriptors, without @every and without
// an embedded time zone (each window names its zone in the policy).
package cronspec

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// ErrBadSpec is wrapped by every parse error.
var ErrBadSpec = errors.New("bad cron spec")

var parser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// Parse parses spec. The returned schedule computes wall-clock times in the
// location of the time passed to Next; callers pass naive wall-clock times in
// UTC and resolve them to instants in the window's zone themselves, because
// robfig/cron skips the spring-forward day and fires twice on fall-back.
func Parse(spec string) (sched cron.Schedule, err error) {
	s := strings.TrimSpace(spec)
	switch {
	case s == "":
		return nil, fmt.Errorf("%w: empty", ErrBadSpec)
	case strings.HasPrefix(s, "@every"):
		return nil, fmt.Errorf("%w: @every is not a calendar time; use a five-field spec such as \"0 2 * * *\"", ErrBadSpec)
	case strings.HasPrefix(s, "TZ=") || strings.HasPrefix(s, "CRON_TZ="):
		return nil, fmt.Errorf("%w: a time zone inside the spec is not allowed; set the window's timezone key", ErrBadSpec)
	}
	if !strings.HasPrefix(s, "@") {
		if n := len(strings.Fields(s)); n != 5 {
			return nil, fmt.Errorf("%w: %q has %d fields, want 5 (minute hour day-of-month month day-of-week)", ErrBadSpec, s, n)
		}
	}
	// robfig/cron panics on some malformed inputs; a policy must never crash
	// the agent.
	defer func() {
		if r := recover(); r != nil {
			sched, err = nil, fmt.Errorf("%w: %q: %v", ErrBadSpec, s, r)
		}
	}()
	sched, err = parser.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("%w: %q: %w", ErrBadSpec, s, err)
	}
	return sched, nil
}

// Fires reports whether sched has an occurrence within five years of from
// (robfig/cron's own search horizon), i.e. whether the spec ever fires.
func Fires(sched cron.Schedule, from time.Time) bool {
	return !sched.Next(Naive(from, time.UTC)).IsZero()
}

// Naive returns t's wall clock in loc as the same wall clock in UTC.
func Naive(t time.Time, loc *time.Location) time.Time {
	w := t.In(loc)
	return time.Date(w.Year(), w.Month(), w.Day(), w.Hour(), w.Minute(), w.Second(), w.Nanosecond(), time.UTC)
}

// Resolve maps a naive wall-clock time (in UTC) to an instant in loc: when
// the wall time occurs twice (fall-back) the first occurrence; when it does
// not occur (spring-forward gap) the first instant after the gap.
func Resolve(naive time.Time, loc *time.Location) time.Time {
	// Offsets in effect a day either side cover every real zone, whose
	// transitions are months apart.
	var best time.Time
	for _, probe := range []time.Time{naive.Add(-30 * time.Hour), naive.Add(30 * time.Hour)} {
		_, off := probe.In(loc).Zone()
		u := naive.Add(-time.Duration(off) * time.Second)
		if Naive(u, loc).Equal(naive) && (best.IsZero() || u.Before(best)) {
			best = u
		}
	}
	if !best.IsZero() {
		return best.In(loc)
	}
	// A gap: under the old offset the wall time lies after the transition,
	// so the zone period holding that instant starts at the transition.
	_, offBefore := naive.Add(-30 * time.Hour).In(loc).Zone()
	u := naive.Add(-time.Duration(offBefore) * time.Second)
	start, _ := u.In(loc).ZoneBounds()
	if start.IsZero() {
		return u.In(loc)
	}
	return start.In(loc)
}
