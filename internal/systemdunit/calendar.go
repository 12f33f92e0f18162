// Package systemdunit renders systemd units from a policy: a .timer whose
// OnCalendar= lines fire at each maintenance window's start, and every few
// minutes while a reboot may begin, so `offpeak check` runs when it matters.
package systemdunit

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/robfig/cron/v3"

	"github.com/offpeak/offpeak/internal/cronspec"
)

// ErrNoEquivalent means a cron spec cannot be written as OnCalendar= lines.
var ErrNoEquivalent = errors.New("no OnCalendar equivalent")

// starBit is robfig/cron's marker for a field written as "*" or "?"; it
// decides whether day-of-month and day-of-week are ANDed or ORed.
const starBit = uint64(1) << 63

// field bounds, as in cron.
type bounds struct{ lo, hi uint }

var (
	minuteBounds = bounds{0, 59}
	hourBounds   = bounds{0, 23}
	domBounds    = bounds{1, 31}
	monthBounds  = bounds{1, 12}
	dowBounds    = bounds{0, 6}
)

// schedule is a parsed five-field spec as bit sets (bit n = value n).
type schedule struct {
	minute, hour, dom, month, dow uint64
}

// days is one combination of day restrictions systemd can AND together.
type days struct {
	dow, dom, month uint64 // without starBit; all bits set = unrestricted
}

func parse(spec string) (schedule, error) {
	s, err := cronspec.Parse(spec)
	if err != nil {
		return schedule{}, err
	}
	ss, ok := s.(*cron.SpecSchedule)
	if !ok {
		return schedule{}, fmt.Errorf("%w: %q is not a calendar spec", ErrNoEquivalent, spec)
	}
	if ss.Second != 1 {
		return schedule{}, fmt.Errorf("%w: %q fires at seconds other than 0", ErrNoEquivalent, spec)
	}
	return schedule{minute: ss.Minute &^ starBit, hour: ss.Hour &^ starBit, dom: ss.Dom, month: ss.Month &^ starBit, dow: ss.Dow}, nil
}

// dayVariants returns the day restrictions as systemd sees them. cron ORs
// day-of-month and day-of-week when both are restricted, while systemd ANDs
// every field of one expression; the OR becomes two expressions, which a
// timer fires on the union of.
func (s schedule) dayVariants() []days {
	domStar, dowStar := s.dom&starBit != 0, s.dow&starBit != 0
	dom, dow := s.dom&^starBit, s.dow&^starBit
	allDom, allDow := fullBits(domBounds), fullBits(dowBounds)
	if domStar || dowStar {
		return []days{{dow: dow, dom: dom, month: s.month}}
	}
	return []days{{dow: dow, dom: allDom, month: s.month}, {dow: allDow, dom: dom, month: s.month}}
}

// OnCalendar converts a window's cron spec in zone into systemd calendar
// expressions in that zone that together elapse exactly when the spec fires
// (zone "" is UTC, "Local" the host's zone), as long as no clock change
// makes a wall-clock time the expressions name skip or repeat: systemd
// resolves those its own way, and may even fail. Timer checks that and
// writes the days concerned in UTC instead.
func OnCalendar(spec, zone string) ([]string, error) {
	s, err := parse(spec)
	if err != nil {
		return nil, err
	}
	return render(s.startLines(), zone), nil
}

// line is one calendar expression in a window's zone: the days it may
// elapse on, and its hours and minutes (second 0).
type line struct {
	d       days
	hours   uint64
	minutes uint64
	minText string // how minutes are written, when not by renderNum
}

func (l line) expr(zone string) string {
	minutes := l.minText
	if minutes == "" {
		minutes = renderNum(l.minutes, minuteBounds)
	}
	return expr(l.d, renderNum(l.hours, hourBounds), minutes, zone)
}

func render(lines []line, zone string) []string {
	var out []string
	for _, l := range lines {
		out = appendUnique(out, l.expr(zone))
	}
	return out
}

// startLines are the expressions elapsing at the spec's fire times.
func (s schedule) startLines() []line {
	var out []line
	for _, d := range s.dayVariants() {
		out = append(out, line{d: d, hours: s.hour, minutes: s.minute})
	}
	return out
}

// expr assembles "DOW YYYY-MM-DD HH:MM:SS ZONE".
func expr(d days, hours, minutes, zone string) string {
	var b strings.Builder
	if w := renderDow(d.dow); w != "" {
		b.WriteString(w)
		b.WriteByte(' ')
	}
	fmt.Fprintf(&b, "*-%s-%s %s:%s:00", renderNum(d.month, monthBounds), renderNum(d.dom, domBounds), hours, minutes)
	if z := zoneSuffix(zone); z != "" {
		b.WriteByte(' ')
		b.WriteString(z)
	}
	return b.String()
}

func zoneSuffix(zone string) string {
	switch zone {
	case "":
		return "UTC"
	case "Local":
		return ""
	}
	return zone
}

func fullBits(r bounds) uint64 {
	var v uint64
	for i := r.lo; i <= r.hi; i++ {
		v |= 1 << i
	}
	return v
}

func values(v uint64, r bounds) []uint {
	var out []uint
	for i := r.lo; i <= r.hi; i++ {
		if v&(1<<i) != 0 {
			out = append(out, i)
		}
	}
	return out
}

// renderNum writes a numeric field: "*" when unrestricted, "a/s" for a
// progression that runs to the field's end (systemd's repetition), else a
// list of values and "a..b" ranges.
func renderNum(v uint64, r bounds) string {
	v &= fullBits(r)
	if v == fullBits(r) {
		return "*"
	}
	vals := values(v, r)
	if len(vals) >= 3 {
		step := vals[1] - vals[0]
		prog := step > 1
		for i := 2; prog && i < len(vals); i++ {
			prog = vals[i]-vals[i-1] == step
		}
		if prog && vals[len(vals)-1]+step > r.hi {
			return fmt.Sprintf("%02d/%d", vals[0], step)
		}
	}
	var parts []string
	for i := 0; i < len(vals); {
		j := i
		for j+1 < len(vals) && vals[j+1] == vals[j]+1 {
			j++
		}
		switch {
		case j-i >= 2:
			parts = append(parts, fmt.Sprintf("%02d..%02d", vals[i], vals[j]))
		default:
			for k := i; k <= j; k++ {
				parts = append(parts, fmt.Sprintf("%02d", vals[k]))
			}
		}
		i = j + 1
	}
	return strings.Join(parts, ",")
}

var dowNames = [7]string{"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"}

// renderDow writes the weekday list Monday first, as systemd normalises it;
// "" when every day is allowed.
func renderDow(v uint64) string {
	v &= fullBits(dowBounds)
	if v == fullBits(dowBounds) || v == 0 {
		return ""
	}
	order := []uint{1, 2, 3, 4, 5, 6, 0}
	var parts []string
	for i := 0; i < len(order); {
		if v&(1<<order[i]) == 0 {
			i++
			continue
		}
		j := i
		for j+1 < len(order) && v&(1<<order[j+1]) != 0 {
			j++
		}
		if j-i >= 2 {
			parts = append(parts, dowNames[order[i]]+".."+dowNames[order[j]])
		} else {
			for k := i; k <= j; k++ {
				parts = append(parts, dowNames[order[k]])
			}
		}
		i = j + 1
	}
	return strings.Join(parts, ",")
}

// shiftDow moves a weekday set n days later.
func shiftDow(v uint64, n int) uint64 {
	var out uint64
	for d := range 7 {
		if v&(1<<uint(d)) != 0 {
			out |= 1 << uint((d+n)%7)
		}
	}
	return out
}

func appendUnique(list []string, s string) []string {
	if slices.Contains(list, s) {
		return list
	}
	return append(list, s)
}
