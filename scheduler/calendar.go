// Package scheduler decides when a node may reboot: the calendar of
// maintenance windows, the admission pipeline and the agent loop.
package scheduler

import (
	"container/heap"
	"fmt"
	"iter"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/offpeak/offpeak/internal/cronspec"
	"github.com/offpeak/offpeak/scheduler/policy"
)

// Window is one opening of the calendar: overlapping windows merged into one,
// blackouts cut out. A reboot may begin at t when Start <= t < RebootUntil.
type Window struct {
	Name        string         // names of the merged windows, joined by "+"
	Start       time.Time      // in Location
	End         time.Time      // in Location; exclusive
	RebootUntil time.Time      // End minus the cutoff
	Location    *time.Location // zone of the first window merged in
}

// Contains reports whether a reboot may begin at t in w.
func (w Window) Contains(t time.Time) bool {
	return !t.Before(w.Start) && t.Before(w.RebootUntil)
}

// maxMerged caps one merged window, so a policy whose windows chain without
// a gap cannot make the calendar loop forever; the next piece continues it.
const maxMerged = 7 * 24 * time.Hour

// horizon bounds how far ahead the calendar looks for windows.
const horizon = 6 * 366 * 24 * time.Hour

// Calendar answers window questions for a policy. It holds no clock: every
// method is a pure function of the policy and the instant passed in.
type Calendar struct {
	specs     []spec
	blackouts []policy.Blackout
	maxDur    time.Duration
}

type spec struct {
	name   string
	sched  cron.Schedule
	loc    *time.Location
	dur    time.Duration
	cutoff time.Duration
}

// NewCalendar compiles windows and blackouts (a policy's Windows and
// Blackouts, or values built by hand). A window needs a cron start, a
// positive duration and a cutoff shorter than it; its zone defaults to UTC.
func NewCalendar(windows []policy.Window, blackouts []policy.Blackout) (*Calendar, error) {
	c := &Calendar{}
	for i, w := range windows {
		sched, err := cronspec.Parse(w.Start)
		if err != nil {
			return nil, fmt.Errorf("window %d (%s): %w", i, w.Name, err)
		}
		loc, err := w.Location()
		if err != nil {
			return nil, fmt.Errorf("window %d (%s): %w", i, w.Name, err)
		}
		if w.Duration <= 0 || w.Cutoff >= w.Duration {
			return nil, fmt.Errorf("window %d (%s): bad duration or cutoff", i, w.Name)
		}
		name := w.Name
		if name == "" {
			name = fmt.Sprintf("window%d", i+1)
		}
		c.specs = append(c.specs, spec{name: name, sched: sched, loc: loc, dur: w.Duration.D(), cutoff: w.Cutoff.D()})
		c.maxDur = max(c.maxDur, w.Duration.D())
	}
	c.blackouts = slices.Clone(blackouts)
	sort.Slice(c.blackouts, func(i, j int) bool { return c.blackouts[i].From.Before(c.blackouts[j].From) })
	return c, nil
}

// Allowed reports whether a reboot may begin at t, and the window it is in.
func (c *Calendar) Allowed(t time.Time) (Window, bool) {
	var found Window
	var ok bool
	c.windowsFrom(c.lookback(t), func(w Window) bool {
		if w.Start.After(t) {
			return false
		}
		if w.Contains(t) {
			found, ok = w, true
			return false
		}
		return true
	})
	return found, ok
}

// Current returns the window containing t ([Start, End)), whether or not its
// cutoff has passed.
func (c *Calendar) Current(t time.Time) (Window, bool) {
	var found Window
	var ok bool
	c.windowsFrom(c.lookback(t), func(w Window) bool {
		if w.Start.After(t) {
			return false
		}
		if t.Before(w.End) {
			found, ok = w, true
			return false
		}
		return true
	})
	return found, ok
}

// Next returns up to n windows that end after t, in time order; a window open
// at t comes first.
func (c *Calendar) Next(t time.Time, n int) []Window {
	var out []Window
	if n <= 0 {
		return nil
	}
	for w := range c.Windows(t) {
		out = append(out, w)
		if len(out) >= n {
			break
		}
	}
	return out
}

// Windows yields, in time order, the windows that end after t.
func (c *Calendar) Windows(t time.Time) iter.Seq[Window] {
	return func(yield func(Window) bool) {
		c.windowsFrom(c.lookback(t), func(w Window) bool {
			if w.End.After(t) {
				return yield(w)
			}
			return true
		})
	}
}

// NextStart returns the first instant at or after t at which a reboot may
// begin, and false when there is none within the horizon.
func (c *Calendar) NextStart(t time.Time) (time.Time, bool) {
	var at time.Time
	c.windowsFrom(c.lookback(t), func(w Window) bool {
		switch {
		case w.Contains(t):
			at = t
		case w.Start.After(t):
			at = w.Start
		default:
			return true
		}
		return false
	})
	return at, !at.IsZero()
}

// Opening is one occurrence of a window's start: the wall-clock time its
// cron spec names (a naive time in UTC) and the instant it resolves to.
type Opening struct {
	Wall time.Time
	At   time.Time
}

// Openings yields, in order, the occurrences of window w's start after
// instant from, each on its own: not merged with overlapping ones,
// blackouts ignored. It is what a timer firing at every window start has to
// follow.
func Openings(w policy.Window, from time.Time) (iter.Seq[Opening], error) {
	sched, err := cronspec.Parse(w.Start)
	if err != nil {
		return nil, err
	}
	loc, err := w.Location()
	if err != nil {
		return nil, err
	}
	s := &spec{name: w.Name, sched: sched, loc: loc, dur: time.Nanosecond}
	return func(yield func(Opening) bool) {
		wall := cronspec.Naive(from, loc).Add(-26 * time.Hour)
		for {
			o, ok := s.occurrence(wall)
			if !ok {
				return
			}
			wall = o.wall
			if o.w.Start.After(from) && !yield(Opening{Wall: o.wall, At: o.w.Start}) {
				return
			}
		}
	}, nil
}

// lookback is where a scan must begin to see every window open at t: no
// occurrence that starts earlier reaches t. (A chain of overlapping windows
// reaching further back is reported from there on; whether a reboot may
// begin at t does not depend on it.) The agent asks several times per pass,
// so the scan is kept short.
func (c *Calendar) lookback(t time.Time) time.Time {
	return t.Add(-c.maxDur)
}

// windowsFrom yields merged, blackout-cut windows in order, starting with
// occurrences after instant from, until yield returns false or the horizon is
// reached.
func (c *Calendar) windowsFrom(from time.Time, yield func(Window) bool) {
	if len(c.specs) == 0 {
		return
	}
	limit := from.Add(horizon)
	raw := c.rawFrom(from)
	var cur *Window
	emit := func(w Window) bool {
		for _, piece := range c.cut(w) {
			if !yield(piece) {
				return false
			}
		}
		return true
	}
	for {
		r, ok := raw.next()
		if !ok || r.Start.After(limit) {
			break
		}
		if cur != nil && !r.Start.After(cur.End) {
			if cur.End.Sub(cur.Start) >= maxMerged {
				// A chain without gaps: emit a piece and continue it; no
				// cutoff at this artificial edge.
				if !r.End.After(cur.End) {
					continue
				}
				cur.RebootUntil = cur.End
				if !emit(*cur) {
					return
				}
				r.Start = cur.End.In(r.Location)
				w := r
				cur = &w
				continue
			}
			if r.End.After(cur.End) {
				cur.End = r.End
			}
			if r.RebootUntil.After(cur.RebootUntil) {
				cur.RebootUntil = r.RebootUntil
			}
			if !slices.Contains(strings.Split(cur.Name, "+"), r.Name) {
				cur.Name += "+" + r.Name
			}
			continue
		}
		if cur != nil && !emit(*cur) {
			return
		}
		w := r
		cur = &w
	}
	if cur != nil {
		emit(*cur)
	}
}

// cut removes blackouts from w. A piece that ends at a blackout keeps the
// window's cutoff before it, so a reboot does not run into the freeze.
func (c *Calendar) cut(w Window) []Window {
	cutoff := w.End.Sub(w.RebootUntil)
	pieces := []Window{w}
	for _, b := range c.blackouts {
		if !b.Until.After(w.Start) || !b.From.Before(w.End) {
			continue
		}
		var next []Window
		for _, p := range pieces {
			if !b.Until.After(p.Start) || !b.From.Before(p.End) {
				next = append(next, p)
				continue
			}
			if b.From.After(p.Start) {
				left := p
				left.End = b.From.In(p.Location)
				if until := b.From.Add(-cutoff); until.Before(left.RebootUntil) {
					left.RebootUntil = until.In(p.Location)
				}
				next = append(next, left)
			}
			if b.Until.Before(p.End) {
				right := p
				right.Start = b.Until.In(p.Location)
				next = append(next, right)
			}
		}
		pieces = next
	}
	out := pieces[:0]
	for _, p := range pieces {
		if p.RebootUntil.After(p.Start) {
			out = append(out, p)
		}
	}
	return out
}

// rawIter merges the occurrences of every spec in start order.
type rawIter struct{ h occHeap }

type occ struct {
	w    Window
	s    *spec
	wall time.Time // naive wall clock of this occurrence
}

type occHeap []occ

func (h occHeap) Len() int { return len(h) }
func (h occHeap) Less(i, j int) bool {
	if h[i].w.Start.Equal(h[j].w.Start) {
		return h[i].w.Name < h[j].w.Name
	}
	return h[i].w.Start.Before(h[j].w.Start)
}
func (h occHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *occHeap) Push(x any)   { *h = append(*h, x.(occ)) }
func (h *occHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

func (c *Calendar) rawFrom(from time.Time) *rawIter {
	it := &rawIter{}
	for i := range c.specs {
		s := &c.specs[i]
		// Start a day early in wall-clock terms so no occurrence near from
		// is missed whatever the offset.
		wall := cronspec.Naive(from, s.loc).Add(-26 * time.Hour)
		if o, ok := s.occurrence(wall); ok {
			heap.Push(&it.h, o)
		}
	}
	return it
}

// occurrence returns the first occurrence of s strictly after the naive wall
// clock time wall.
func (s *spec) occurrence(wall time.Time) (occ, bool) {
	n := s.sched.Next(wall)
	if n.IsZero() {
		return occ{}, false
	}
	start := cronspec.Resolve(n, s.loc)
	end := start.Add(s.dur)
	return occ{
		w:    Window{Name: s.name, Start: start, End: end.In(s.loc), RebootUntil: end.Add(-s.cutoff).In(s.loc), Location: s.loc},
		s:    s,
		wall: n,
	}, true
}

func (it *rawIter) next() (Window, bool) {
	if it.h.Len() == 0 {
		return Window{}, false
	}
	o := heap.Pop(&it.h).(occ)
	if nx, ok := o.s.occurrence(o.wall); ok {
		heap.Push(&it.h, nx)
	}
	return o.w, true
}
