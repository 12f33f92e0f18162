package systemdunit

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/offpeak/offpeak/internal/policyload"
	"github.com/offpeak/offpeak/scheduler"
	"github.com/offpeak/offpeak/scheduler/policy"
)

// calendarLines returns the OnCalendar= values of a timer.
func calendarLines(timer string) []string {
	var out []string
	for _, line := range strings.Split(timer, "\n") {
		if e, ok := strings.CutPrefix(line, "OnCalendar="); ok {
			out = append(out, e)
		}
	}
	return out
}

// systemdElapses asks systemd for the next elapses of each expression
// after base (up to n each) and returns their union in (base, until),
// sorted. Any expression systemd cannot evaluate is a test error. Each
// elapse of an expression with a zone costs systemd a process, so
// expressions that first elapse after until are not asked again.
func systemdElapses(t *testing.T, bin string, exprs []string, base, until time.Time, n int) []time.Time {
	t.Helper()
	var relevant []string
	for e, ats := range calendarRun(t, bin, exprs, base, 1) {
		if len(ats) > 0 && ats[0].Before(until) {
			relevant = append(relevant, e)
		}
	}
	if len(relevant) == 0 {
		return nil
	}
	slices.Sort(relevant)
	var out []time.Time
	for _, ats := range calendarRun(t, bin, relevant, base, n) {
		for _, at := range ats {
			if at.After(base) && at.Before(until) {
				out = append(out, at)
			}
		}
	}
	slices.SortFunc(out, time.Time.Compare)
	return slices.CompactFunc(out, time.Time.Equal)
}

// calendarRun runs systemd-analyze calendar once and returns the elapses it
// prints for each expression, in UTC.
func calendarRun(t *testing.T, bin string, exprs []string, base time.Time, n int) map[string][]time.Time {
	t.Helper()
	args := []string{"calendar", "--iterations=" + strconv.Itoa(n), "--base-time=@" + strconv.FormatInt(base.Unix(), 10)}
	cmd := exec.Command(bin, append(args, exprs...)...)
	cmd.Env = append(os.Environ(), "TZ=UTC", "SYSTEMD_COLORS=0", "LC_ALL=C")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil || stderr.Len() > 0 {
		t.Errorf("systemd-analyze calendar --base-time=%s: %v: %s\nexpressions:\n%s", base.Format(time.RFC3339), err,
			strings.TrimSpace(stderr.String()), strings.Join(exprs, "\n"))
	}
	out := map[string][]time.Time{}
	var cur string
	original := false
	for _, line := range strings.Split(stdout.String(), "\n") {
		line = strings.TrimSpace(line)
		var v string
		switch {
		case strings.HasPrefix(line, "Original form:"):
			cur, original = strings.TrimSpace(strings.TrimPrefix(line, "Original form:")), true
			continue
		case strings.HasPrefix(line, "Normalized form:"):
			if !original {
				cur = strings.TrimSpace(strings.TrimPrefix(line, "Normalized form:"))
			}
			original = false
			continue
		case strings.HasPrefix(line, "Next elapse:"):
			v = strings.TrimSpace(strings.TrimPrefix(line, "Next elapse:"))
		case strings.HasPrefix(line, "Iter. #"):
			v = strings.TrimSpace(line[strings.Index(line, ":")+1:])
		default:
			continue
		}
		if v == "never" {
			continue
		}
		at, err := time.Parse("Mon 2006-01-02 15:04:05 MST", v)
		if err != nil {
			t.Fatalf("systemd-analyze calendar: cannot read %q: %v", line, err)
		}
		if !slices.Contains(exprs, cur) {
			t.Fatalf("systemd-analyze calendar printed an elapse of %q, which was not asked for", cur)
		}
		out[cur] = append(out[cur], at.UTC())
	}
	return out
}

// windowStarts returns the starts of the windows offpeak lists in (base,
// until), in UTC.
func windowStarts(t *testing.T, pol *policy.Policy, base, until time.Time) []time.Time {
	t.Helper()
	cal, err := scheduler.NewCalendar(pol.Windows, pol.Blackouts)
	if err != nil {
		t.Fatal(err)
	}
	var out []time.Time
	for w := range cal.Windows(base) {
		if !w.Start.Before(until) {
			break
		}
		if w.Start.After(base) {
			out = append(out, w.Start.UTC())
		}
	}
	return out
}

func formatTimes(ts []time.Time) string {
	var b strings.Builder
	for _, t := range ts {
		fmt.Fprintf(&b, "  %s\n", t.Format(time.RFC3339))
	}
	return b.String()
}

// dstCase is a window around whose zone's clock changes the timer is
// compared with offpeak's calendar.
type dstCase struct {
	spec, zone string
	genNow     string // when the timer is generated (RFC 3339)
}

// dstCases cover starts inside spring-forward gaps and fall-back repeats,
// at midnight where the zone changes its clocks at midnight, next to the
// gap, and starts that DST never touches.
var dstCases = []dstCase{
	{"30 2 * * *", "America/New_York", "2025-01-01T00:00:00Z"}, // in the 02:00-03:00 gap; systemd skips 03-09
	{"30 1 * * *", "America/New_York", "2025-01-01T00:00:00Z"}, // in the 01:00-02:00 repeat
	{"0 2 * * 0", "America/New_York", "2025-01-01T00:00:00Z"},  // weekly, at the gap's first minute
	{"0 3 * * *", "America/New_York", "2025-01-01T00:00:00Z"},  // at the gap's end: exists every day
	{"30 2 * * *", "Europe/Berlin", "2025-01-01T00:00:00Z"},    // in the gap and in the repeat
	{"0 2 * * 1-5", "Europe/Berlin", "2025-01-01T00:00:00Z"},   // weekdays only: never on a Sunday change
	{"0 0 * * *", "America/Asuncion", "2023-01-01T00:00:00Z"},  // midnight in the gap
	{"30 0 * * *", "America/Asuncion", "2023-01-01T00:00:00Z"}, // in the midnight gap
	{"30 23 * * *", "America/Asuncion", "2023-01-01T00:00:00Z"},
	{"0 0 * * *", "America/Havana", "2025-01-01T00:00:00Z"},
	{"30 0 * * *", "America/Havana", "2025-01-01T00:00:00Z"},
	{"0 2 * * *", "America/Havana", "2025-01-01T00:00:00Z"},
	{"30 23 * * 6", "America/Havana", "2025-01-01T00:00:00Z"},
	{"15 2 * * *", "Australia/Lord_Howe", "2025-01-01T00:00:00Z"}, // in the 30-minute gap
	{"45 1 * * *", "Australia/Lord_Howe", "2025-01-01T00:00:00Z"}, // in the 30-minute repeat
	{"45 2 * * *", "Pacific/Chatham", "2025-01-01T00:00:00Z"},     // the gap's first minute
	{"0 3 * * *", "Pacific/Chatham", "2025-01-01T00:00:00Z"},      // in the gap and the repeat
	{"0 2 * * *", "Pacific/Chatham", "2025-01-01T00:00:00Z"},
	{"0 0 * * *", "America/Santiago", "2025-01-01T00:00:00Z"},
	{"30 0 * * *", "Atlantic/Azores", "2025-01-01T00:00:00Z"},
}

// TestTimerFiresAtEveryWindowStartOnDSTDays compares the generated timer
// with offpeak's calendar around the first clock changes after the timer is
// generated: from 30 hours before each change to 30 hours after, systemd
// must elapse exactly
// when a window opens, and evaluate every line without error.
func TestTimerFiresAtEveryWindowStartOnDSTDays(t *testing.T) {
	bin := systemdAnalyze(t)
	for _, c := range dstCases {
		t.Run(c.zone+" "+c.spec, func(t *testing.T) {
			t.Parallel()
			pol := dstPolicy(t, c.spec, c.zone)
			now, err := time.Parse(time.RFC3339, c.genNow)
			if err != nil {
				t.Fatal(err)
			}
			timer, err := Timer(pol, TimerOptions{Now: now})
			if err != nil {
				t.Fatal(err)
			}
			lines := calendarLines(timer)
			loc, _ := time.LoadLocation(c.zone)
			changes := 0
			for at := now; changes < 2; changes++ {
				_, next := at.In(loc).ZoneBounds()
				if next.IsZero() {
					t.Fatalf("no clock change in %s after %s", c.zone, at)
				}
				at = next
				base, until := next.Add(-30*time.Hour), next.Add(30*time.Hour)
				want := windowStarts(t, pol, base, until)
				got := systemdElapses(t, bin, lines, base, until, len(want)+1)
				if !slices.EqualFunc(got, want, time.Time.Equal) {
					t.Errorf("around the change at %s, the timer elapses at\n%soffpeak's windows start at\n%stimer:\n%s",
						next.Format(time.RFC3339), formatTimes(got), formatTimes(want), timer)
				}
			}
		})
	}
}

func dstPolicy(t *testing.T, spec, zone string) *policy.Policy {
	t.Helper()
	src := fmt.Sprintf("[[window]]\nname = \"w\"\nstart = %q\nduration = \"1h\"\ntimezone = %q\n", spec, zone)
	pol, err := policyload.Parse("dst.toml", []byte(src), policyload.Options{Now: time.Date(2023, 1, 1, 0, 0, 0, 0, time.UTC)})
	if err != nil {
		t.Fatal(err)
	}
	return pol
}

// TestTimerLinesAroundClockChanges pins what the generator writes: a
// window's expressions stay in its zone except on the days a clock change
// touches them, whose starts are dated lines in UTC up to the end of the
// fifth year after the timer was made.
func TestTimerLinesAroundClockChanges(t *testing.T) {
	now := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name, spec, zone string
		want             []string
	}{
		{"untouched by DST", "0 2 * * 1-5", "Europe/Berlin", []string{"Mon..Fri *-*-* 02:00:00 Europe/Berlin"}},
		{"at the end of the gap", "0 3 * * *", "Europe/Berlin", []string{"*-*-* 03:00:00 Europe/Berlin"}},
		{"no DST", "30 1 * * *", "Asia/Kolkata", []string{"*-*-* 01:30:00 Asia/Kolkata"}},
		// 02:30 falls in New York's spring-forward gap on the second Sunday
		// of March (the 8th to the 14th); that day the window opens when
		// the gap ends, 03:00 EDT = 07:00Z. 02:30 is not in the fall-back
		// repeat (01:00-02:00).
		{"in the spring-forward gap", "30 2 * * *", "America/New_York", []string{
			"*-01,02,04..12-* 02:30:00 America/New_York",
			"*-03-01..07,15..31 02:30:00 America/New_York",
			"Mon..Sat *-03-08..14 02:30:00 America/New_York",
			"2026-03-08 07:00:00 UTC",
			"2027-03-14 07:00:00 UTC",
			"2028-03-12 07:00:00 UTC",
			"2029-03-11 07:00:00 UTC",
			"2030-03-10 07:00:00 UTC",
		}},
		// 01:30 happens twice on the first Sunday of November (the 1st to
		// the 7th); the window opens at the first, 01:30 EDT = 05:30Z.
		// systemd would try 02:00 after 01:59 on the spring-forward day,
		// which does not exist: the second Sunday of March is left out too,
		// and opens at 01:30 EST = 06:30Z.
		{"in the fall-back repeat", "30 1 * * *", "America/New_York", []string{
			"*-01,02,04..10,12-* 01:30:00 America/New_York",
			"*-03-01..07,15..31 01:30:00 America/New_York",
			"Mon..Sat *-03-08..14 01:30:00 America/New_York",
			"*-11-08..31 01:30:00 America/New_York",
			"Mon..Sat *-11-01..07 01:30:00 America/New_York",
			"2025-11-02 05:30:00 UTC",
			"2026-11-01 05:30:00 UTC",
			"2027-11-07 05:30:00 UTC",
			"2028-11-05 05:30:00 UTC",
			"2029-11-04 05:30:00 UTC",
			"2030-11-03 05:30:00 UTC",
			"2026-03-08 06:30:00 UTC",
			"2027-03-14 06:30:00 UTC",
			"2028-03-12 06:30:00 UTC",
			"2029-03-11 06:30:00 UTC",
			"2030-03-10 06:30:00 UTC",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			timer, err := Timer(dstPolicy(t, tt.spec, tt.zone), TimerOptions{Now: now})
			if err != nil {
				t.Fatal(err)
			}
			if got := calendarLines(timer); !slices.Equal(got, tt.want) {
				t.Fatalf("OnCalendar lines\n%s\nwant\n%s\ntimer:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"), timer)
			}
			dated := strings.Contains(timer, "UTC\n")
			if note := strings.Contains(timer, "end on 2030-12-31: regenerate it before then"); note != dated {
				t.Fatalf("dated lines %v, but the note on regenerating %v:\n%s", dated, note, timer)
			}
		})
	}
}

// TestTimerRetriesEvaluateOnDSTDays: the re-run lines systemd evaluates
// through a clock change too, and the window's start stays among the
// elapses.
func TestTimerRetriesEvaluateOnDSTDays(t *testing.T) {
	bin := systemdAnalyze(t)
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, c := range []struct{ spec, zone string }{
		{"0 2 * * *", "Pacific/Chatham"},
		{"30 2 * * *", "America/New_York"},
		{"0 2 * * *", "Australia/Lord_Howe"},
		{"0 0 * * *", "America/Havana"},
	} {
		t.Run(c.zone+" "+c.spec, func(t *testing.T) {
			t.Parallel()
			pol := dstPolicy(t, c.spec, c.zone)
			pol.Windows[0].Duration = policy.Duration(3 * time.Hour)
			timer, err := Timer(pol, TimerOptions{Now: now, Every: 5 * time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			loc, _ := time.LoadLocation(c.zone)
			_, change := now.In(loc).ZoneBounds()
			base, until := change.Add(-time.Hour), change.Add(23*time.Hour)
			got := systemdElapses(t, bin, calendarLines(timer), base, until, 14)
			for _, s := range windowStarts(t, pol, base, until) {
				if !slices.ContainsFunc(got, s.Equal) {
					t.Errorf("no elapse at the window start %s; elapses:\n%stimer:\n%s", s.Format(time.RFC3339), formatTimes(got), timer)
				}
			}
		})
	}
}

// TestTimerFiresWhenABlackoutEnds: a window that opens when a blackout
// ends inside it has no start of its own in the cron spec.
func TestTimerFiresWhenABlackoutEnds(t *testing.T) {
	bin := systemdAnalyze(t)
	src := "[[window]]\nname = \"w\"\nstart = \"0 2 * * *\"\nduration = \"3h\"\ntimezone = \"Europe/Berlin\"\n" +
		"[[blackout]]\nfrom = 2025-12-20\nuntil = 2025-12-24T03:00:00\ntimezone = \"Europe/Berlin\"\n"
	pol, err := policyload.Parse("b.toml", []byte(src), policyload.Options{Now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)})
	if err != nil {
		t.Fatal(err)
	}
	timer, err := Timer(pol, TimerOptions{Now: time.Date(2025, 12, 1, 0, 0, 0, 0, time.UTC)})
	if err != nil {
		t.Fatal(err)
	}
	base, until := time.Date(2025, 12, 22, 0, 0, 0, 0, time.UTC), time.Date(2025, 12, 27, 0, 0, 0, 0, time.UTC)
	want := windowStarts(t, pol, base, until)
	// 03:00 CET on the 24th = 02:00Z, then the 25th and 26th at 01:00Z.
	if len(want) != 3 || !want[0].Equal(time.Date(2025, 12, 24, 2, 0, 0, 0, time.UTC)) {
		t.Fatalf("offpeak's windows start at\n%s", formatTimes(want))
	}
	got := systemdElapses(t, bin, calendarLines(timer), base, until, 6)
	for _, s := range want {
		if !slices.ContainsFunc(got, s.Equal) {
			t.Errorf("no elapse at the window start %s; elapses:\n%stimer:\n%s", s.Format(time.RFC3339), formatTimes(got), timer)
		}
	}
}

// TestTimerRefusesAWindowItCannotWriteReadably: rather than an endless
// timer, an error that names the window and says what to do.
func TestTimerRefusesAWindowItCannotWriteReadably(t *testing.T) {
	pol := dstPolicy(t, "30 2 * * *", "America/New_York")
	g := &generator{now: time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC), until: time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC), maxLines: 5}
	var b strings.Builder
	err := g.writeWindow(&b, 0, pol.Windows[0])
	if err == nil || !strings.Contains(err.Error(), `window "w" (dst.toml:1): "30 2 * * *" in America/New_York would need 8 OnCalendar= lines`) ||
		!strings.Contains(err.Error(), "offpeak agent") {
		t.Fatalf("err = %v", err)
	}
	if b.Len() != 0 {
		t.Fatalf("wrote %q before refusing", b.String())
	}
}

func TestCompressDates(t *testing.T) {
	days := func(from, to civil, keep func(civil) bool) []civil {
		var out []civil
		for d := from; !to.before(d); d = d.addDays(1) {
			if keep(d) {
				out = append(out, d)
			}
		}
		return out
	}
	all := func(civil) bool { return true }
	weekdays := func(c civil) bool { return c.weekday() != time.Saturday && c.weekday() != time.Sunday }
	tests := []struct {
		name  string
		dates []civil
		want  []string
	}{
		{"one date", []civil{{2026, 3, 8}}, []string{"2026-03-08"}},
		{"whole months and years", days(civil{2026, 1, 1}, civil{2028, 12, 31}, func(c civil) bool { return c.m != 3 }),
			[]string{"2026..2028-01,02,04..12-*"}},
		{"part of a month", days(civil{2026, 3, 1}, civil{2026, 3, 29}, all), []string{"2026-03-01..29"}},
		{"weekdays of whole months", days(civil{2027, 1, 1}, civil{2027, 2, 28}, weekdays), []string{"Mon..Fri 2027-01,02-*"}},
		{"weekdays of part of a month", days(civil{2027, 3, 8}, civil{2027, 3, 31}, weekdays), []string{"Mon..Fri 2027-03-08..31"}},
		{"a list is shorter", []civil{{2027, 3, 1}, {2027, 3, 2}, {2027, 3, 5}}, []string{"2027-03-01,02,05"}},
		{"years apart", []civil{{2026, 11, 1}, {2028, 11, 1}}, []string{"2026,2028-11-01"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := compressDates(tt.dates); !slices.Equal(got, tt.want) {
				t.Fatalf("compressDates = %q, want %q", got, tt.want)
			}
		})
	}
}
