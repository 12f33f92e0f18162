package scheduler

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// TestLocalDateBlackoutHoldsAcrossMidnightGap is the report: a blackout of
// Asuncion's 2023-09-30 let a reboot through at 23:30 that evening, because
// the end of the day (2023-10-01 00:00, which falls in the spring-forward
// gap) was put an hour before the gap. The day ends at the end of the gap,
// 01:00 -03 = 04:00Z; 23:30 -04 = 03:30Z is still blacked out.
func TestLocalDateBlackoutHoldsAcrossMidnightGap(t *testing.T) {
	src := win("w", "0 3 * * *", "2h", "UTC", "") +
		"[[blackout]]\nfrom = 2023-09-30\nuntil = 2023-10-01\ntimezone = \"America/Asuncion\"\n"
	c := calendar(t, src)
	for _, tt := range []struct {
		at   string
		want bool
	}{
		{"2023-09-30T03:30:00Z", true},  // 23:30 -04 on the 29th
		{"2023-10-01T03:30:00Z", false}, // 23:30 -04 on the 30th
		{"2023-10-01T03:59:59Z", false}, // the last second of the 30th
		{"2023-10-01T04:00:00Z", true},  // 01:00 -03 on the 1st, after the gap
	} {
		if _, got := c.Allowed(mustTime(t, tt.at)); got != tt.want {
			t.Errorf("Allowed(%s) = %v, want %v", tt.at, got, tt.want)
		}
	}
	// Havana's 2025-03-09 begins at the end of its midnight gap, 01:00 CDT
	// = 05:00Z; 23:30 CST on the 8th (04:30Z) is not part of it.
	c = calendar(t, win("w", "0 4 * * *", "2h", "UTC", "")+
		"[[blackout]]\nfrom = 2025-03-09\nuntil = 2025-03-10\ntimezone = \"America/Havana\"\n")
	if _, ok := c.Allowed(mustTime(t, "2025-03-09T04:30:00Z")); !ok {
		t.Error("23:30 CST on 2025-03-08 is blacked out by a blackout of the 9th")
	}
	if _, ok := c.Allowed(mustTime(t, "2025-03-09T05:00:00Z")); ok {
		t.Error("01:00 CDT on 2025-03-09 is not blacked out")
	}
}

// firstAtOrAfter is the rule, written independently of the code under
// test: the first instant whose wall clock in loc reads at least the naive
// time wall (a UTC time standing for a local one). It scans minute by
// minute from the earliest instant that could read wall (offsets stay
// within ±15h); transitions of the years tested fall on whole minutes.
func firstAtOrAfter(wall time.Time, loc *time.Location) time.Time {
	for t := wall.Add(-15 * time.Hour); ; t = t.Add(time.Minute) {
		w := t.In(loc)
		if !time.Date(w.Year(), w.Month(), w.Day(), w.Hour(), w.Minute(), 0, 0, time.UTC).Before(wall) {
			return t
		}
	}
}

// transitions lists the instants at which loc's offset changes in [from, to).
func transitions(loc *time.Location, from, to time.Time) []time.Time {
	var out []time.Time
	for t := from; t.Before(to); {
		_, end := t.In(loc).ZoneBounds()
		if end.IsZero() || !end.Before(to) {
			break
		}
		out = append(out, end)
		t = end
	}
	return out
}

type oracleBlackout struct{ from, until time.Time }

// TestBlackoutsAgreeWithTheRule: random policies whose blackouts are local
// dates and date-times in zones that change their clocks at midnight and
// elsewhere, mostly placed on transition days. Every blackout resolves as
// the rule says; "allowed at t" agrees with membership in the windows that
// Windows lists; no instant inside a blackout is allowed; and no listed
// window overlaps a blackout.
func TestBlackoutsAgreeWithTheRule(t *testing.T) {
	zones := []string{
		"America/Asuncion", "America/Havana", "America/Santiago", "Atlantic/Azores", "America/Scoresbysund",
		"America/Coyhaique", "Asia/Amman", "Asia/Gaza", "Asia/Hebron", "Antarctica/Casey", "Antarctica/Vostok",
		"Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Pacific/Chatham", "UTC",
	}
	specs := []string{"0 0 * * *", "30 23 * * *", "15 0 * * *", "0 2 * * *", "30 1 * * 0", "0 */6 * * *", "45 22 * * 1-5", "0 12 * * *"}
	durs := []string{"20m", "1h", "3h", "90m", "7h", "26h"}
	rangeFrom := time.Date(2020, 6, 1, 0, 0, 0, 0, time.UTC)
	rangeTo := time.Date(2025, 12, 1, 0, 0, 0, 0, time.UTC)
	locs := map[string]*time.Location{}
	trans := map[string][]time.Time{}
	for _, z := range zones {
		loc, err := time.LoadLocation(z)
		if err != nil {
			t.Fatal(err)
		}
		locs[z] = loc
		trans[z] = transitions(loc, rangeFrom, rangeTo)
	}
	r := rand.New(rand.NewPCG(16, 2023))
	naiveDay := func(t time.Time, loc *time.Location) time.Time {
		w := t.In(loc)
		return time.Date(w.Year(), w.Month(), w.Day(), 0, 0, 0, 0, time.UTC)
	}
	checked, blackedOut, allowedSeen := 0, 0, 0
	for i := range 150 {
		var src string
		for w := range 1 + r.IntN(3) {
			src += win(fmt.Sprintf("w%d", w), specs[r.IntN(len(specs))], durs[r.IntN(len(durs))], zones[r.IntN(len(zones))], "")
		}
		var want []oracleBlackout
		var probes []time.Time
		for range 1 + r.IntN(3) {
			z := zones[r.IntN(len(zones))]
			loc := locs[z]
			// A day near a transition most of the time, else any day.
			var anchor time.Time
			if ts := trans[z]; len(ts) > 0 && r.IntN(4) != 0 {
				anchor = ts[r.IntN(len(ts))].Add(time.Duration(r.IntN(3)-1) * 24 * time.Hour)
			} else {
				anchor = rangeFrom.Add(time.Duration(r.Int64N(int64(rangeTo.Sub(rangeFrom) - 60*24*time.Hour))))
			}
			var from, until time.Time // naive
			var literal func(time.Time) string
			if r.IntN(2) == 0 {
				from = naiveDay(anchor, loc)
				until = from.AddDate(0, 0, 1+r.IntN(3))
				literal = func(t time.Time) string { return t.Format("2006-01-02") }
			} else {
				// Wall-clock minutes around the anchor's, so gaps and
				// repeats are hit.
				from = naiveDay(anchor, loc).Add(time.Duration(r.IntN(26*60)) * time.Minute)
				until = from.Add(time.Duration(10+r.IntN(30*60)) * time.Minute)
				literal = func(t time.Time) string { return t.Format("2006-01-02T15:04:05") }
			}
			ob := oracleBlackout{firstAtOrAfter(from, loc), firstAtOrAfter(until, loc)}
			if !ob.until.After(ob.from) {
				continue // both ends in one gap: the policy refuses it
			}
			src += fmt.Sprintf("[[blackout]]\nfrom = %s\nuntil = %s\ntimezone = %q\n", literal(from), literal(until), z)
			want = append(want, ob)
			probes = append(probes, ob.from, ob.from.Add(-time.Minute), ob.until, ob.until.Add(-time.Second), ob.until.Add(time.Minute))
		}
		c := calendar(t, src)
		for k, ob := range want {
			found := false
			for _, b := range c.blackouts {
				found = found || (b.From.Equal(ob.from) && b.Until.Equal(ob.until))
			}
			if !found {
				t.Fatalf("case %d: no blackout resolves to [%s, %s) as the rule says for blackout %d; got %v\npolicy:\n%s", i,
					ob.from.UTC().Format(time.RFC3339), ob.until.UTC().Format(time.RFC3339), k, c.blackouts, src)
			}
		}
		for range 10 {
			probes = append(probes, want[r.IntN(len(want))].from.Add(time.Duration(r.Int64N(int64(4*24*time.Hour)))-48*time.Hour).Truncate(time.Minute))
		}
		for _, at := range probes {
			checked++
			_, allowed := c.Allowed(at)
			if allowed {
				allowedSeen++
			}
			listed := false
			for w := range c.Windows(at.Add(-time.Duration(r.Int64N(int64(10 * 24 * time.Hour))))) {
				if w.Start.After(at) {
					break
				}
				if w.Contains(at) {
					listed = true
				}
			}
			if allowed != listed {
				t.Fatalf("case %d: Allowed(%s) = %v but membership in the listed windows = %v\npolicy:\n%s", i, at.UTC().Format(time.RFC3339), allowed, listed, src)
			}
			for _, b := range want {
				if !at.Before(b.from) && at.Before(b.until) {
					blackedOut++
					if allowed {
						t.Fatalf("case %d: a reboot may begin at %s inside the blackout [%s, %s)\npolicy:\n%s", i, at.UTC().Format(time.RFC3339),
							b.from.UTC().Format(time.RFC3339), b.until.UTC().Format(time.RFC3339), src)
					}
				}
			}
		}
		for _, b := range want {
			for w := range c.Windows(b.from.Add(-8 * 24 * time.Hour)) {
				if w.Start.After(b.until) {
					break
				}
				if w.Start.Before(b.until) && b.from.Before(w.End) {
					t.Fatalf("case %d: window %s [%s, %s) overlaps the blackout [%s, %s)\npolicy:\n%s", i, w.Name,
						w.Start.UTC().Format(time.RFC3339), w.End.UTC().Format(time.RFC3339),
						b.from.UTC().Format(time.RFC3339), b.until.UTC().Format(time.RFC3339), src)
				}
			}
		}
	}
	if allowedSeen == 0 || blackedOut == 0 {
		t.Fatalf("property not exercised: %d instants checked, %d allowed, %d inside a blackout", checked, allowedSeen, blackedOut)
	}
	t.Logf("%d instants checked, %d allowed, %d inside a blackout", checked, allowedSeen, blackedOut)
}
