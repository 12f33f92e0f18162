package scheduler

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/offpeak/offpeak/internal/policyload"
)

func mustTime(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func calendar(t *testing.T, src string) *Calendar {
	t.Helper()
	p, err := policyload.Parse("test.toml", []byte(src), policyload.Options{Now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)})
	if err != nil {
		t.Fatalf("policy: %v", err)
	}
	c, err := NewCalendar(p.Windows, p.Blackouts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func win(name, start, dur, tz, cutoff string) string {
	s := fmt.Sprintf("[[window]]\nname = %q\nstart = %q\nduration = %q\ntimezone = %q\n", name, start, dur, tz)
	if cutoff != "" {
		s += fmt.Sprintf("cutoff = %q\n", cutoff)
	}
	return s
}

// TestWindowStarts pins the README's time rules ("Time semantics") on fixed
// dates: the first window after "from" must open and close exactly at the
// given instants.
func TestWindowStarts(t *testing.T) {
	tests := []struct {
		name       string
		policy     string
		from       string
		start, end string // RFC 3339, UTC
	}{
		{"new york ordinary day", win("w", "30 2 * * *", "1h", "America/New_York", ""), "2025-03-08T00:00:00Z", "2025-03-08T07:30:00Z", "2025-03-08T08:30:00Z"},
		{"new york spring-forward gap opens after the gap", win("w", "30 2 * * *", "1h", "America/New_York", ""), "2025-03-09T00:00:00Z", "2025-03-09T07:00:00Z", "2025-03-09T08:00:00Z"},
		{"new york day after the gap", win("w", "30 2 * * *", "1h", "America/New_York", ""), "2025-03-10T00:00:00Z", "2025-03-10T06:30:00Z", "2025-03-10T07:30:00Z"},
		{"new york fall-back opens at the first occurrence", win("w", "30 1 * * *", "1h", "America/New_York", ""), "2025-11-02T00:00:00Z", "2025-11-02T05:30:00Z", "2025-11-02T06:30:00Z"},
		{"new york fall-back does not open again", win("w", "30 1 * * *", "1h", "America/New_York", ""), "2025-11-02T06:30:00Z", "2025-11-03T06:30:00Z", "2025-11-03T07:30:00Z"},
		{"new york duration is elapsed time across fall-back", win("w", "0 0 * * *", "4h", "America/New_York", ""), "2025-11-02T00:00:00Z", "2025-11-02T04:00:00Z", "2025-11-02T08:00:00Z"},
		{"london spring-forward gap", win("w", "30 1 * * *", "2h", "Europe/London", ""), "2025-03-30T00:00:00Z", "2025-03-30T01:00:00Z", "2025-03-30T03:00:00Z"},
		{"london fall-back first occurrence", win("w", "30 1 * * *", "2h", "Europe/London", ""), "2025-10-26T00:00:00Z", "2025-10-26T00:30:00Z", "2025-10-26T02:30:00Z"},
		{"london fall-back next day", win("w", "30 1 * * *", "2h", "Europe/London", ""), "2025-10-26T03:00:00Z", "2025-10-27T01:30:00Z", "2025-10-27T03:30:00Z"},
		{"lord howe 30-minute gap", win("w", "15 2 * * *", "1h", "Australia/Lord_Howe", ""), "2025-10-04T12:00:00Z", "2025-10-04T15:30:00Z", "2025-10-04T16:30:00Z"},
		{"lord howe 30-minute repeat", win("w", "45 1 * * *", "1h", "Australia/Lord_Howe", ""), "2025-04-05T12:00:00Z", "2025-04-05T14:45:00Z", "2025-04-05T15:45:00Z"},
		{"lord howe after repeat", win("w", "45 1 * * *", "1h", "Australia/Lord_Howe", ""), "2025-04-05T15:45:00Z", "2025-04-06T15:15:00Z", "2025-04-06T16:15:00Z"},
		{"kolkata no dst", win("w", "0 2 * * *", "2h", "Asia/Kolkata", ""), "2025-03-30T00:00:00Z", "2025-03-30T20:30:00Z", "2025-03-30T22:30:00Z"},
		{"crossing midnight", win("w", "0 23 * * *", "3h", "UTC", ""), "2025-06-03T03:00:00Z", "2025-06-03T23:00:00Z", "2025-06-04T02:00:00Z"},
		{"crossing the end of the week", win("w", "0 22 * * 0", "6h", "Europe/Berlin", ""), "2025-06-02T03:00:00Z", "2025-06-08T20:00:00Z", "2025-06-09T02:00:00Z"},
		{"monthly", win("w", "0 3 1 * *", "2h", "UTC", ""), "2025-06-02T00:00:00Z", "2025-07-01T03:00:00Z", "2025-07-01T05:00:00Z"},
		{"yearly descriptor", win("w", "@yearly", "6h", "Europe/Berlin", ""), "2025-06-02T00:00:00Z", "2025-12-31T23:00:00Z", "2026-01-01T05:00:00Z"},
		{"overlapping windows merge", win("a", "0 1 * * *", "2h", "UTC", "") + win("b", "0 2 * * *", "2h", "UTC", ""), "2025-06-03T00:00:00Z", "2025-06-03T01:00:00Z", "2025-06-03T04:00:00Z"},
		{"adjacent windows merge", win("a", "0 1 * * *", "1h", "UTC", "") + win("b", "0 2 * * *", "1h", "UTC", ""), "2025-06-03T00:00:00Z", "2025-06-03T01:00:00Z", "2025-06-03T03:00:00Z"},
		{"windows in different zones merge", win("a", "0 1 * * *", "2h", "UTC", "") + win("b", "0 4 * * *", "2h", "Europe/Berlin", ""), "2025-06-03T00:00:00Z", "2025-06-03T01:00:00Z", "2025-06-03T04:00:00Z"},
		{"window open at from is listed first", win("w", "0 2 * * *", "3h", "UTC", ""), "2025-06-03T03:00:00Z", "2025-06-03T02:00:00Z", "2025-06-03T05:00:00Z"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := calendar(t, tt.policy)
			ws := c.Next(mustTime(t, tt.from), 1)
			if len(ws) != 1 {
				t.Fatalf("got %d windows", len(ws))
			}
			if got, want := ws[0].Start.UTC(), mustTime(t, tt.start); !got.Equal(want) {
				t.Errorf("start = %s, want %s", got.Format(time.RFC3339), want.Format(time.RFC3339))
			}
			if got, want := ws[0].End.UTC(), mustTime(t, tt.end); !got.Equal(want) {
				t.Errorf("end = %s, want %s", got.Format(time.RFC3339), want.Format(time.RFC3339))
			}
		})
	}
}

func TestFallBackOpensOnce(t *testing.T) {
	c := calendar(t, win("w", "30 1 * * *", "20m", "America/New_York", ""))
	ws := c.Next(mustTime(t, "2025-11-02T00:00:00Z"), 2)
	if len(ws) != 2 {
		t.Fatalf("got %d windows", len(ws))
	}
	if day := ws[1].Start.Sub(ws[0].Start); day < 24*time.Hour {
		t.Fatalf("window opened twice on the fall-back day: %s and %s", ws[0].Start, ws[1].Start)
	}
	if _, ok := c.Allowed(mustTime(t, "2025-11-02T06:35:00Z")); ok {
		t.Fatal("reboot allowed at the repeated 01:35 EST")
	}
}

func TestAllowed(t *testing.T) {
	tests := []struct {
		name   string
		policy string
		at     string
		want   bool
	}{
		{"inside", win("w", "0 2 * * *", "3h", "UTC", "30m"), "2025-06-03T02:00:00Z", true},
		{"before start", win("w", "0 2 * * *", "3h", "UTC", "30m"), "2025-06-03T01:59:59Z", false},
		{"last instant before cutoff", win("w", "0 2 * * *", "3h", "UTC", "30m"), "2025-06-03T04:29:59Z", true},
		{"at cutoff", win("w", "0 2 * * *", "3h", "UTC", "30m"), "2025-06-03T04:30:00Z", false},
		{"end is exclusive", win("w", "0 2 * * *", "3h", "UTC", ""), "2025-06-03T05:00:00Z", false},
		{"after midnight in a window crossing it", win("w", "0 23 * * *", "3h", "UTC", ""), "2025-06-04T01:00:00Z", true},
		{"monday morning in a sunday night window", win("w", "0 22 * * 0", "6h", "Europe/Berlin", ""), "2025-06-09T01:00:00Z", true},
		{"spring-forward gap day, before opening", win("w", "30 2 * * *", "1h", "America/New_York", ""), "2025-03-09T06:59:59Z", false},
		{"spring-forward gap day, at opening", win("w", "30 2 * * *", "1h", "America/New_York", ""), "2025-03-09T07:00:00Z", true},
		{"merged: between the cutoff of a and the start of b", win("a", "0 1 * * *", "2h", "UTC", "30m") + win("b", "45 2 * * *", "75m", "UTC", "30m"), "2025-06-03T02:35:00Z", true},
		{"merged: the last cutoff applies", win("a", "0 1 * * *", "2h", "UTC", "30m") + win("b", "45 2 * * *", "75m", "UTC", "30m"), "2025-06-03T03:30:00Z", false},
		{"blackout covers part of a window", win("w", "0 1 * * *", "4h", "UTC", "") + "[[blackout]]\nfrom = 2025-06-03T02:00:00Z\nuntil = 2025-06-03T03:00:00Z\n", "2025-06-03T02:30:00Z", false},
		{"before the blackout", win("w", "0 1 * * *", "4h", "UTC", "") + "[[blackout]]\nfrom = 2025-06-03T02:00:00Z\nuntil = 2025-06-03T03:00:00Z\n", "2025-06-03T01:30:00Z", true},
		{"after the blackout", win("w", "0 1 * * *", "4h", "UTC", "") + "[[blackout]]\nfrom = 2025-06-03T02:00:00Z\nuntil = 2025-06-03T03:00:00Z\n", "2025-06-03T03:00:00Z", true},
		{"cutoff before a blackout", win("w", "0 1 * * *", "4h", "UTC", "20m") + "[[blackout]]\nfrom = 2025-06-03T02:00:00Z\nuntil = 2025-06-03T03:00:00Z\n", "2025-06-03T01:45:00Z", false},
		{"local-date blackout in its zone", win("w", "0 1 * * *", "4h", "UTC", "") + "[[blackout]]\nfrom = 2025-06-03\nuntil = 2025-06-04\ntimezone = \"Asia/Tokyo\"\n", "2025-06-03T02:00:00Z", false},
		{"local-date blackout ended in its zone", win("w", "0 1 * * *", "4h", "UTC", "") + "[[blackout]]\nfrom = 2025-06-02\nuntil = 2025-06-03\ntimezone = \"Asia/Tokyo\"\n", "2025-06-03T02:00:00Z", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := calendar(t, tt.policy)
			if _, got := c.Allowed(mustTime(t, tt.at)); got != tt.want {
				t.Fatalf("Allowed(%s) = %v, want %v; windows: %v", tt.at, got, tt.want, c.Next(mustTime(t, tt.at).Add(-24*time.Hour), 3))
			}
		})
	}
}

func TestNextStart(t *testing.T) {
	c := calendar(t, win("w", "0 2 * * *", "3h", "UTC", "30m"))
	at, ok := c.NextStart(mustTime(t, "2025-06-03T12:00:00Z"))
	if !ok || !at.Equal(mustTime(t, "2025-06-04T02:00:00Z")) {
		t.Fatalf("NextStart = %v %v", at, ok)
	}
	at, ok = c.NextStart(mustTime(t, "2025-06-03T03:00:00Z"))
	if !ok || !at.Equal(mustTime(t, "2025-06-03T03:00:00Z")) {
		t.Fatalf("NextStart inside = %v %v", at, ok)
	}
}

func TestChainedWindowsTerminate(t *testing.T) {
	// Windows that overlap forever must not make the calendar loop.
	c := calendar(t, win("a", "0 * * * *", "2h", "UTC", "30m"))
	ws := c.Next(mustTime(t, "2025-06-03T00:00:00Z"), 3)
	if len(ws) != 3 {
		t.Fatalf("got %d windows", len(ws))
	}
	for _, at := range []string{"2025-06-03T05:00:00Z", "2025-06-20T05:00:00Z"} {
		if _, ok := c.Allowed(mustTime(t, at)); !ok {
			t.Errorf("not allowed at %s inside an endless chain", at)
		}
	}
}

// TestAllowedAgreesWithNext: for random policies and instants, "allowed at t"
// agrees with membership in the list Next returns from a point before t.
func TestAllowedAgreesWithNext(t *testing.T) {
	zones := []string{"UTC", "America/New_York", "Europe/London", "Australia/Lord_Howe", "Asia/Kolkata", "Europe/Berlin", "America/Santiago", "Pacific/Chatham"}
	specs := []string{"0 2 * * *", "30 1 * * *", "15 2 * * 0", "0 23 * * 1-5", "0 0 1 * *", "@weekly", "45 3 * * 6", "0 */6 * * *", "30 2 8-14 3,11 0"}
	durs := []string{"20m", "1h", "3h", "90m", "7h"}
	r := rand.New(rand.NewPCG(1, 2))
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	allowedSeen := 0
	for i := range 150 {
		var src string
		for w := range 1 + r.IntN(4) {
			d := durs[r.IntN(len(durs))]
			cut := ""
			if r.IntN(2) == 0 {
				cut = "10m"
			}
			src += win(fmt.Sprintf("w%d", w), specs[r.IntN(len(specs))], d, zones[r.IntN(len(zones))], cut)
		}
		if r.IntN(3) == 0 {
			from := base.Add(time.Duration(r.IntN(365*24)) * time.Hour)
			src += fmt.Sprintf("[[blackout]]\nfrom = %s\nuntil = %s\n", from.Format(time.RFC3339), from.Add(time.Duration(1+r.IntN(72))*time.Hour).Format(time.RFC3339))
		}
		c := calendar(t, src)
		for range 20 {
			at := base.Add(time.Duration(r.Int64N(int64(365 * 24 * time.Hour)))).Truncate(time.Minute)
			from := at.Add(-time.Duration(r.Int64N(int64(40 * 24 * time.Hour))))
			_, allowed := c.Allowed(at)
			if allowed {
				allowedSeen++
			}
			listed := false
			for w := range c.Windows(from) {
				if w.Start.After(at) {
					break
				}
				if w.Contains(at) {
					listed = true
				}
			}
			if allowed != listed {
				t.Fatalf("case %d: Allowed(%s) = %v but Next(%s) membership = %v\npolicy:\n%s", i, at, allowed, from, listed, src)
			}
		}
	}
	if allowedSeen == 0 {
		t.Fatal("no sampled instant was inside a window; the property was not exercised")
	}
}

// BenchmarkNext1000Windows measures the calendar against a baseline of
// robfig/cron's own Next over the same five specs (which is what zincati-
// or kured-style schedulers do, without DST handling or merging).
func BenchmarkNext1000Windows(b *testing.B) {
	specs := []struct{ name, start, dur, tz, cutoff string }{
		{"a", "0 2 * * 1-5", "3h", "Europe/Berlin", "30m"},
		{"b", "0 4 * * 6,0", "5h", "America/New_York", "30m"},
		{"c", "30 1 1 * *", "2h", "Asia/Kolkata", ""},
		{"d", "0 22 * * 3", "4h", "Australia/Lord_Howe", "15m"},
		{"e", "15 3 * * *", "45m", "UTC", ""},
	}
	var src string
	for _, s := range specs {
		src += win(s.name, s.start, s.dur, s.tz, s.cutoff)
	}
	p, err := policyload.Parse("bench.toml", []byte(src), policyload.Options{})
	if err != nil {
		b.Fatal(err)
	}
	c, err := NewCalendar(p.Windows, p.Blackouts)
	if err != nil {
		b.Fatal(err)
	}
	from := time.Date(2025, 3, 8, 0, 0, 0, 0, time.UTC)
	b.Run("calendar", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if n := len(c.Next(from, 1000)); n != 1000 {
				b.Fatalf("got %d", n)
			}
		}
	})
	b.Run("robfig-baseline", func(b *testing.B) {
		parser := cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)
		var scheds []cron.Schedule
		for _, s := range specs {
			loc, _ := time.LoadLocation(s.tz)
			sc, err := parser.Parse("CRON_TZ=" + loc.String() + " " + s.start)
			if err != nil {
				b.Fatal(err)
			}
			scheds = append(scheds, sc)
		}
		b.ReportAllocs()
		for b.Loop() {
			// 1000 activations across the five specs, earliest first.
			next := make([]time.Time, len(scheds))
			for i, sc := range scheds {
				next[i] = sc.Next(from)
			}
			for range 1000 {
				k := 0
				for i := range next {
					if next[i].Before(next[k]) {
						k = i
					}
				}
				next[k] = scheds[k].Next(next[k])
			}
		}
	})
}

// BenchmarkAllowed is the per-pass cost the agent pays several times.
func BenchmarkAllowed(b *testing.B) {
	p, err := policyload.Parse("bench.toml", []byte(win("a", "0 2 * * 1-5", "3h", "Europe/Berlin", "30m")+win("b", "0 6 * * 0", "4h", "Europe/Berlin", "30m")), policyload.Options{})
	if err != nil {
		b.Fatal(err)
	}
	c, err := NewCalendar(p.Windows, p.Blackouts)
	if err != nil {
		b.Fatal(err)
	}
	at := time.Date(2025, 6, 3, 12, 0, 0, 0, time.UTC)
	b.ReportAllocs()
	for b.Loop() {
		c.Allowed(at)
	}
}

// TestDayFieldWithStepIsRestricted pins robfig/cron's reading, which the
// README documents: "*/2" restricts the day of month, so with a restricted
// day of week the two are ORed (odd days or Mondays), unlike Vixie cron.
func TestDayFieldWithStepIsRestricted(t *testing.T) {
	c := calendar(t, win("w", "0 3 */2 * 1", "1h", "UTC", ""))
	var got []string
	for _, w := range c.Next(mustTime(t, "2025-06-01T00:00:00Z"), 8) {
		got = append(got, w.Start.UTC().Format("01-02 Mon"))
	}
	// June 2025: the 1st is a Sunday; odd days, plus Mondays 2, 16 (and 30).
	want := []string{"06-01 Sun", "06-02 Mon", "06-03 Tue", "06-05 Thu", "06-07 Sat", "06-09 Mon", "06-11 Wed", "06-13 Fri"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("starts %v, want %v", got, want)
	}
}

// TestEndlessChainListedAsPieces pins the README: a window chain that never
// ends (26 h every day) is listed as consecutive pieces of at most 7 days,
// each starting where the previous ends, without a cutoff at the seams.
func TestEndlessChainListedAsPieces(t *testing.T) {
	c := calendar(t, win("w", "0 0 * * *", "26h", "UTC", "1h"))
	ws := c.Next(mustTime(t, "2025-06-01T12:00:00Z"), 3)
	if len(ws) != 3 {
		t.Fatalf("got %d windows", len(ws))
	}
	for i, w := range ws {
		if d := w.End.Sub(w.Start); d > maxMerged+26*time.Hour {
			t.Errorf("piece %d lasts %s", i, d)
		}
		if !w.RebootUntil.Equal(w.End) {
			t.Errorf("piece %d has a cutoff at a seam: reboots until %s, ends %s", i, w.RebootUntil, w.End)
		}
		if i > 0 && !w.Start.Equal(ws[i-1].End) {
			t.Errorf("piece %d starts at %s, the previous ends at %s", i, w.Start, ws[i-1].End)
		}
	}
	for _, at := range []time.Time{ws[1].Start, ws[1].Start.Add(-time.Nanosecond), ws[2].Start.Add(time.Minute)} {
		if _, ok := c.Allowed(at); !ok {
			t.Errorf("not allowed at %s inside the chain", at)
		}
	}
}
