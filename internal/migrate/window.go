package migrate

import (
	"fmt"
	"time"
)

// window is one [[window]] of the migrated policy: a wall-clock start on
// some weekdays and a length.
type window struct {
	name         string
	days         map[time.Weekday]bool // every day when nil
	hour, minute int
	length       time.Duration
	zone         string
	why          []string
}

func (w window) cron() string {
	days := w.days
	if days == nil {
		days = allDays()
	}
	return fmt.Sprintf("%d %d * * %s", w.minute, w.hour, cronDays(days))
}

func allDays() map[time.Weekday]bool {
	m := map[time.Weekday]bool{}
	for d := time.Sunday; d <= time.Saturday; d++ {
		m[d] = true
	}
	return m
}

// addWindows writes the windows; the first carries the comment on cutoff.
func (d *doc) addWindows(ws []window) {
	if len(ws) == 0 {
		return
	}
	for i, w := range ws {
		t := d.entry("window", w.why...)
		t.set("name", tomlString(w.name))
		t.set("start", tomlString(w.cron()))
		t.set("duration", tomlString(fmtDuration(w.length)))
		t.set("timezone", tomlString(w.zone))
		if i == 0 {
			t.set("cutoff", tomlString("0s"),
				fmt.Sprintf("%s lets a reboot begin until the window's last moment; offpeak can stop earlier (cutoff = \"15m\" keeps the last 15 minutes free). Kept at 0s to match.", d.tool))
		} else {
			t.set("cutoff", tomlString("0s"))
		}
	}
}

// clockChange is one change of a zone's UTC offset. lo and hi bound, as
// naive wall-clock times (the wall clock read as UTC), the hour that is
// skipped (gap) or happens twice (repeat).
type clockChange struct {
	at     time.Time
	gap    bool
	lo, hi time.Time
	before int // UTC offset in seconds before the change
}

// clockChanges returns the next n offset changes of loc after from.
func clockChanges(loc *time.Location, from time.Time, n int) []clockChange {
	var out []clockChange
	t := from
	for guard := 0; len(out) < n && guard < 8*n; guard++ {
		_, end := t.In(loc).ZoneBounds()
		if end.IsZero() {
			break
		}
		_, offBefore := end.Add(-time.Second).In(loc).Zone()
		_, offAfter := end.In(loc).Zone()
		t = end
		if offBefore == offAfter {
			continue // only the zone's name changed
		}
		oldWall := naive(end, offBefore)
		newWall := naive(end, offAfter)
		c := clockChange{at: end, gap: offAfter > offBefore, before: offBefore}
		if c.gap {
			c.lo, c.hi = oldWall, newWall
		} else {
			c.lo, c.hi = newWall, oldWall
		}
		out = append(out, c)
	}
	return out
}

func naive(t time.Time, offset int) time.Time {
	return t.UTC().Add(time.Duration(offset) * time.Second)
}

func (c clockChange) describe(zone string) string {
	if c.gap {
		return fmt.Sprintf("on %s %s skips %s–%s", c.lo.Format("2006-01-02"), zone, c.lo.Format("15:04"), c.hi.Format("15:04"))
	}
	return fmt.Sprintf("on %s %s repeats %s–%s", c.lo.Format("2006-01-02"), zone, c.lo.Format("15:04"), c.hi.Format("15:04"))
}

// touches reports whether an opening of w, read on the wall clock, overlaps
// the hour c skips or repeats.
func (w window) touches(c clockChange) bool {
	days := w.days
	if days == nil {
		days = allDays()
	}
	day := time.Date(c.lo.Year(), c.lo.Month(), c.lo.Day(), 0, 0, 0, 0, time.UTC)
	for k := -8; k <= 1; k++ {
		d := day.AddDate(0, 0, k)
		if !days[d.Weekday()] {
			continue
		}
		s := d.Add(time.Duration(w.hour)*time.Hour + time.Duration(w.minute)*time.Minute)
		e := s.Add(w.length)
		if s.Before(c.hi) && e.After(c.lo) {
			return true
		}
	}
	return false
}

// wallClockNote says where a source tool whose windows follow the wall
// clock (zincati, kured) and offpeak part on the zone's next clock changes.
func (d *doc) wallClockNote(ws []window, loc *time.Location, zone string, now time.Time) {
	for _, c := range clockChanges(loc, now, 2) {
		for _, w := range ws {
			if !w.touches(c) {
				continue
			}
			if c.gap {
				d.note(Pos{}, "", "Clock change: %s, inside window %q. %s reads its windows on the wall clock, so that day the window loses the skipped hour (or does not open at all when it lies wholly inside it). offpeak opens a window at its wall-clock start — right after the gap when the start is skipped — and keeps it open for its duration of real time.",
					c.describe(zone), w.name, d.tool)
			} else {
				d.note(Pos{}, "", "Clock change: %s, inside window %q. %s reads its windows on the wall clock, so that day the window also covers the repeated hour. offpeak opens a window once, at the first occurrence of its start, and keeps it open for its duration of real time.",
					c.describe(zone), w.name, d.tool)
			}
			break
		}
	}
}
