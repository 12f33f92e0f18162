package systemdunit

import (
	"cmp"
	"fmt"
	"maps"
	"math/bits"
	"slices"
	"strings"
	"time"
)

// Why some days are written in UTC.
//
// systemd evaluates an expression in a zone with mktime(3) and tm_isdst =
// -1, trying candidate wall-clock times (each hour it considers at minute 0,
// each minute it considers, the next hour once one is used up, each day at
// 00:00). A candidate that a clock change skips is moved by the size of the
// gap, forward or back depending on mktime's previous guess: systemd then
// skips that day's start (New York "02:30" on the spring-forward day) or
// gives up on the expression ("Resource deadlock avoided" for Pacific/
// Chatham "02:45"), which stops the timer. A candidate that happens twice
// is taken at either occurrence. offpeak opens such a window at the first
// instant after the gap and at the first occurrence.
//
// Rather than predict mktime, the generator never lets systemd meet such a
// time: an expression stays in the window's zone only for days on which no
// clock change touches a candidate of it. The days on which one does (in
// practice the change days themselves) are taken out of the zone's
// expressions and their window starts are written as dated lines in UTC,
// which has no clock changes, for the years ahead. Where a change skips
// midnight (Havana, Santiago, the Azores…) systemd tries it on every day it
// passes, so the whole month of such a change is taken out.

// safetyYears is how far ahead zone expressions are checked; they are
// valid for as long as the zone's rules stay as they are.
const safetyYears = 30

// civil is a calendar date.
type civil struct {
	y int
	m time.Month
	d int
}

func civilOf(t time.Time) civil {
	y, m, d := t.Date()
	return civil{y, m, d}
}

// midnight is the date's 00:00 as a naive time in UTC.
func (c civil) midnight() time.Time { return time.Date(c.y, c.m, c.d, 0, 0, 0, 0, time.UTC) }

func (c civil) addDays(n int) civil { return civilOf(c.midnight().AddDate(0, 0, n)) }

func (c civil) weekday() time.Weekday { return c.midnight().Weekday() }

func (c civil) before(o civil) bool { return c.midnight().Before(o.midnight()) }

func daysIn(y int, m time.Month) int { return time.Date(y, m+1, 0, 0, 0, 0, 0, time.UTC).Day() }

// match reports whether an expression with these day restrictions may
// elapse on date c.
func (d days) match(c civil) bool {
	return d.dow&(1<<uint(c.weekday())) != 0 && d.dom&(1<<uint(c.d)) != 0 && d.month&(1<<uint(c.m)) != 0
}

// clockChange is the wall-clock range, as naive times [lo, hi), that a
// change of a zone's offset skips (gap) or repeats.
type clockChange struct {
	lo, hi time.Time
	gap    bool
}

// clockChanges lists loc's offset changes in [from, to).
func clockChanges(loc *time.Location, from, to time.Time) []clockChange {
	var out []clockChange
	for t := from; t.Before(to); {
		_, end := t.In(loc).ZoneBounds()
		if end.IsZero() || !end.Before(to) || !end.After(t) {
			break
		}
		_, before := end.Add(-time.Second).In(loc).Zone()
		_, after := end.In(loc).Zone()
		if before != after {
			old := end.Add(time.Duration(before) * time.Second).UTC()
			nu := end.Add(time.Duration(after) * time.Second).UTC()
			if after > before {
				out = append(out, clockChange{lo: old, hi: nu, gap: true})
			} else {
				out = append(out, clockChange{lo: nu, hi: old})
			}
		}
		t = end
	}
	return out
}

// skippedMidnight returns the date whose 00:00 the gap c skips, if any.
// systemd tries 00:00 of every day it passes, and from a day's last hour it
// moves on to the next day's 00:00.
func (c clockChange) skippedMidnight() (civil, bool) {
	d := civilOf(c.hi.Add(-time.Nanosecond))
	return d, c.gap && !d.midnight().Before(c.lo)
}

// risk is what keeps a window's zone expressions from days around clock
// changes: dates, and whole months where a change skips midnight (systemd
// passes through every day of a month it searches).
type risk struct {
	dates  []civil
	months uint64
}

func (r risk) none() bool { return len(r.dates) == 0 && r.months == 0 }

// assess finds the days on which systemd, evaluating lines, would meet a
// wall-clock time that one of changes skips or repeats.
func assess(lines []line, changes []clockChange) risk {
	var r risk
	for _, c := range changes {
		for _, l := range lines {
			r.dates = append(r.dates, l.riskyDates(c)...)
			if d, ok := c.skippedMidnight(); ok {
				prev := d.addDays(-1).m
				if l.d.month&(1<<uint(d.m)) != 0 || (d.d == 1 && l.d.month&(1<<uint(prev)) != 0) {
					r.months |= 1 << uint(d.m)
					if d.d == 1 {
						r.months |= 1 << uint(prev)
					}
				}
			}
		}
	}
	return r
}

// riskyDates returns the dates on which systemd, evaluating l, would try a
// wall-clock time that c skips, or would elapse at one that c repeats.
func (l line) riskyDates(c clockChange) []civil {
	var out []civil
	last := civilOf(c.hi.Add(-time.Nanosecond))
	for d := civilOf(c.lo).addDays(-1); !last.before(d); d = d.addDays(1) {
		if !l.d.match(d) {
			continue
		}
		if l.touches(d, c) {
			out = append(out, d)
		}
	}
	return out
}

func (l line) touches(d civil, c clockChange) bool {
	day := d.midnight()
	for _, h := range values(l.hours, hourBounds) {
		hour := day.Add(time.Duration(h) * time.Hour)
		if c.gap {
			// Every candidate of this hour, up to the next hour's 00.
			if hour.Before(c.hi) && !hour.Add(time.Hour).Before(c.lo) {
				return true
			}
			continue
		}
		for _, m := range values(l.minutes, minuteBounds) {
			at := hour.Add(time.Duration(m) * time.Minute)
			if !at.Before(c.lo) && at.Before(c.hi) {
				return true
			}
		}
	}
	return false
}

// box is the part of one month taken out of a window's zone expressions:
// the days from a to b that fall on one of the weekdays in dow.
type box struct {
	dow  uint64
	a, b int
}

func (x box) has(c civil) bool { return c.d >= x.a && c.d <= x.b && x.dow&(1<<uint(c.weekday())) != 0 }

// boxes covers r month by month.
func (r risk) boxes() map[time.Month]box {
	out := map[time.Month]box{}
	for _, c := range r.dates {
		x, ok := out[c.m]
		if !ok {
			x = box{a: c.d, b: c.d}
		}
		x.dow |= 1 << uint(c.weekday())
		x.a, x.b = min(x.a, c.d), max(x.b, c.d)
		out[c.m] = x
	}
	for m := time.January; m <= time.December; m++ {
		if r.months&(1<<uint(m)) != 0 {
			out[m] = box{dow: fullBits(dowBounds), a: 1, b: 31}
		}
	}
	return out
}

func rangeBits(a, b int) uint64 {
	var v uint64
	for i := a; i <= b; i++ {
		v |= 1 << uint(i)
	}
	return v
}

// outside returns expressions that elapse as l does on every date outside
// the boxes, and never inside them.
func (l line) outside(boxes map[time.Month]box) []line {
	var risky uint64
	for m := range boxes {
		risky |= 1 << uint(m)
	}
	var out []line
	if mb := l.d.month &^ risky; mb != 0 {
		c := l
		c.d.month = mb
		out = append(out, c)
	}
	groups := map[box]uint64{}
	for m, x := range boxes {
		if l.d.month&(1<<uint(m)) != 0 {
			groups[x] |= 1 << uint(m)
		}
	}
	keys := slices.SortedFunc(maps.Keys(groups), func(a, b box) int {
		return cmp.Compare(bits.TrailingZeros64(groups[a]), bits.TrailingZeros64(groups[b]))
	})
	for _, x := range keys {
		r := rangeBits(x.a, x.b)
		if dom := l.d.dom &^ r; dom != 0 {
			c := l
			c.d = days{dow: l.d.dow, dom: dom, month: groups[x]}
			out = append(out, c)
		}
		if dom, dow := l.d.dom&r, l.d.dow&^x.dow; dom != 0 && dow != 0 {
			c := l
			c.d = days{dow: dow, dom: dom, month: groups[x]}
			out = append(out, c)
		}
	}
	return out
}

// dated collects window starts and re-run hours on UTC dates and writes
// them as calendar expressions.
type dated struct {
	starts  map[civil]*[24]uint64 // minutes of each hour
	exact   []time.Time           // starts not on a whole minute
	retries map[civil]uint64      // hours
}

func newDated() *dated {
	return &dated{starts: map[civil]*[24]uint64{}, retries: map[civil]uint64{}}
}

func (d *dated) addStart(at time.Time) {
	at = at.UTC()
	if at.Second() != 0 || at.Nanosecond() != 0 {
		d.exact = append(d.exact, at)
		return
	}
	c := civilOf(at)
	if d.starts[c] == nil {
		d.starts[c] = new([24]uint64)
	}
	d.starts[c][at.Hour()] |= 1 << uint(at.Minute())
}

// addRetries marks the UTC hours from at's up to the one holding
// at+span-1ns.
func (d *dated) addRetries(at time.Time, span time.Duration) {
	at = at.UTC()
	for h := at.Truncate(time.Hour); h.Before(at.Add(span)); h = h.Add(time.Hour) {
		d.retries[civilOf(h)] |= 1 << uint(h.Hour())
	}
}

func (d *dated) empty() bool { return len(d.starts) == 0 && len(d.exact) == 0 && len(d.retries) == 0 }

// startExprs returns the expressions of the starts.
func (d *dated) startExprs() []string {
	groups := map[[24]uint64][]civil{}
	for c, p := range d.starts {
		groups[*p] = append(groups[*p], c)
	}
	var out []string
	for _, g := range sortedGroups(groups) {
		times := productTimes(g.key)
		for _, de := range compressDates(g.dates) {
			for _, t := range times {
				out = append(out, de+" "+t+" UTC")
			}
		}
	}
	slices.SortFunc(d.exact, time.Time.Compare)
	for _, at := range slices.CompactFunc(d.exact, time.Time.Equal) {
		// Round up: a run a little after the start finds the window open,
		// one before it does not.
		out = append(out, at.UTC().Add(time.Second-time.Nanosecond).Truncate(time.Second).Format("2006-01-02 15:04:05")+" UTC")
	}
	return out
}

// retryExprs returns the expressions of the re-run hours, minutes written
// as minText.
func (d *dated) retryExprs(minText string) []string {
	groups := map[uint64][]civil{}
	for c, h := range d.retries {
		groups[h] = append(groups[h], c)
	}
	var out []string
	for _, g := range sortedGroups(groups) {
		for _, de := range compressDates(g.dates) {
			out = append(out, fmt.Sprintf("%s %s:%s:00 UTC", de, renderNum(g.key, hourBounds), minText))
		}
	}
	return out
}

type group[K comparable] struct {
	key   K
	dates []civil
}

// sortedGroups orders groups by their first date.
func sortedGroups[K comparable](m map[K][]civil) []group[K] {
	var out []group[K]
	for k, ds := range m {
		slices.SortFunc(ds, civilCompare)
		out = append(out, group[K]{k, ds})
	}
	slices.SortFunc(out, func(a, b group[K]) int { return civilCompare(a.dates[0], b.dates[0]) })
	return out
}

func civilCompare(a, b civil) int { return a.midnight().Compare(b.midnight()) }

// productTimes writes the minutes of a day as "HH:MM:00" expressions, hours
// that share their minutes in one.
func productTimes(p [24]uint64) []string {
	byMinutes := map[uint64]uint64{}
	var order []uint64
	for h, mins := range p {
		if mins == 0 {
			continue
		}
		if byMinutes[mins] == 0 {
			order = append(order, mins)
		}
		byMinutes[mins] |= 1 << uint(h)
	}
	var out []string
	for _, mins := range order {
		out = append(out, fmt.Sprintf("%s:%s:00", renderNum(byMinutes[mins], hourBounds), renderNum(mins, minuteBounds)))
	}
	return out
}

// compressDates writes a set of dates as few "[WEEKDAYS ]YEARS-MONTHS-DAYS"
// expressions as it can: days of a month as ranges (or as weekdays over a
// range when shorter), months of a year sharing their days together, and
// years sharing their months and days together.
func compressDates(dates []civil) []string {
	type ym struct {
		y int
		m time.Month
	}
	perMonth := map[ym]uint64{}
	for _, c := range dates {
		perMonth[ym{c.y, c.m}] |= 1 << uint(c.d)
	}
	type yearForm struct {
		y         int
		dow, days string
	}
	months := map[yearForm]uint64{}
	first := map[yearForm]civil{}
	for k, v := range perMonth {
		dow, d := dayForm(k.y, k.m, v)
		f := yearForm{k.y, dow, d}
		months[f] |= 1 << uint(k.m)
		c := civil{k.y, k.m, bits.TrailingZeros64(v)}
		if old, ok := first[f]; !ok || c.before(old) {
			first[f] = c
		}
	}
	type form struct{ dow, months, days string }
	years := map[form][]int{}
	firstOf := map[form]civil{}
	for f, mb := range months {
		k := form{f.dow, renderNum(mb, monthBounds), f.days}
		years[k] = append(years[k], f.y)
		if old, ok := firstOf[k]; !ok || first[f].before(old) {
			firstOf[k] = first[f]
		}
	}
	keys := slices.SortedFunc(maps.Keys(years), func(a, b form) int { return civilCompare(firstOf[a], firstOf[b]) })
	out := make([]string, 0, len(keys))
	for _, k := range keys {
		e := fmt.Sprintf("%s-%s-%s", renderYears(years[k]), k.months, k.days)
		if k.dow != "" {
			e = k.dow + " " + e
		}
		out = append(out, e)
	}
	return out
}

// dayForm writes a month's days: "*" for all of them, else a list of
// ranges, or weekdays over a range when that is shorter.
func dayForm(y int, m time.Month, v uint64) (dow, days string) {
	n := daysIn(y, m)
	if v == rangeBits(1, n) {
		return "", "*"
	}
	plain := renderNum(v, domBounds)
	lo, hi := bits.TrailingZeros64(v), 63-bits.LeadingZeros64(v)
	var wd, span uint64
	for d := lo; d <= hi; d++ {
		if v&(1<<uint(d)) != 0 {
			wd |= 1 << uint(civil{y, m, d}.weekday())
		}
	}
	for d := lo; d <= hi; d++ {
		if wd&(1<<uint(civil{y, m, d}.weekday())) != 0 {
			span |= 1 << uint(d)
		}
	}
	if span != v || wd == fullBits(dowBounds) {
		return "", plain
	}
	days = renderNum(rangeBits(lo, hi), domBounds)
	if v == weekdaysOf(y, m, wd) {
		days = "*"
	}
	if w := renderDow(wd); len(w)+1+len(days) < len(plain) {
		return w, days
	}
	return "", plain
}

// weekdaysOf returns the days of a month that fall on the weekdays wd.
func weekdaysOf(y int, m time.Month, wd uint64) uint64 {
	var v uint64
	for d := 1; d <= daysIn(y, m); d++ {
		if wd&(1<<uint(civil{y, m, d}.weekday())) != 0 {
			v |= 1 << uint(d)
		}
	}
	return v
}

// renderYears writes years as a list, runs of three or more as "a..b".
func renderYears(ys []int) string {
	slices.Sort(ys)
	ys = slices.Compact(ys)
	var parts []string
	for i := 0; i < len(ys); {
		j := i
		for j+1 < len(ys) && ys[j+1] == ys[j]+1 {
			j++
		}
		if j-i >= 2 {
			parts = append(parts, fmt.Sprintf("%d..%d", ys[i], ys[j]))
		} else {
			for k := i; k <= j; k++ {
				parts = append(parts, fmt.Sprint(ys[k]))
			}
		}
		i = j + 1
	}
	return strings.Join(parts, ",")
}
