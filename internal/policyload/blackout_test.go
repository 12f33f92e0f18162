package policyload

import (
	"fmt"
	"testing"
	"time"
)

// blackoutCase is one [[blackout]] written with local dates or date-times
// in a zone, and the instants it must resolve to. The expected instants are
// worked out by hand from the zone's offsets in the comment of each row
// (the transitions are past ones, the same in every tzdata release since),
// not computed with the code under test.
type blackoutCase struct {
	name, zone   string
	from, until  string // TOML values: local dates or local date-times
	want, wantTo string // RFC 3339, UTC
}

func checkBlackouts(t *testing.T, tests []blackoutCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := fmt.Sprintf("[[blackout]]\nfrom = %s\nuntil = %s\ntimezone = %q\n", tt.from, tt.until, tt.zone)
			p, err := Parse("test.toml", []byte(src), Options{Now: refNow})
			if err != nil {
				t.Fatal(err)
			}
			b := p.Blackouts[0]
			want, _ := time.Parse(time.RFC3339, tt.want)
			wantTo, _ := time.Parse(time.RFC3339, tt.wantTo)
			if !b.From.Equal(want) {
				t.Errorf("from = %s resolves to %s, want %s", tt.from, b.From.UTC().Format(time.RFC3339), tt.want)
			}
			if !b.Until.Equal(wantTo) {
				t.Errorf("until = %s resolves to %s, want %s", tt.until, b.Until.UTC().Format(time.RFC3339), tt.wantTo)
			}
		})
	}
}

// TestBlackoutLocalDatesAcrossDST pins the rule for local dates: a named
// date covers all of that date's wall-clock time. It starts at the first
// instant at or after its local 00:00 and ends at the first instant at or
// after the next day's 00:00 ("until = D" ends where D begins). In zones
// whose clocks change at midnight, 00:00 may not exist (the date starts when
// the gap ends) or may happen twice (the date starts at the first).
func TestBlackoutLocalDatesAcrossDST(t *testing.T) {
	checkBlackouts(t, []blackoutCase{
		// Asuncion, 2023-10-01: at 00:00 -04 the clock jumps to 01:00 -03
		// (04:00Z). The 30th runs from 00:00 -04 = 04:00Z on the 30th to
		// the end of the gap, 01:00 -03 = 04:00Z on the 1st. 23:30 -04 on
		// the 30th (03:30Z) is inside.
		{"asuncion midnight gap ends the day before", "America/Asuncion", "2023-09-30", "2023-10-01", "2023-09-30T04:00:00Z", "2023-10-01T04:00:00Z"},
		// The 1st starts at the end of the gap, 04:00Z, and ends at
		// 00:00 -03 on the 2nd = 03:00Z: a 23-hour day.
		{"asuncion midnight gap starts the day", "America/Asuncion", "2023-10-01", "2023-10-02", "2023-10-01T04:00:00Z", "2023-10-02T03:00:00Z"},
		// Asuncion, 2024-03-24: at 00:00 -03 (03:00Z) the clock goes back
		// to 23:00 -04 on the 23rd, so 23:00-24:00 of the 23rd happens
		// twice and the 24th begins once, at 00:00 -04 = 04:00Z. The 23rd
		// starts at 00:00 -03 = 03:00Z: a 25-hour day.
		{"asuncion repeat before midnight", "America/Asuncion", "2024-03-23", "2024-03-24", "2024-03-23T03:00:00Z", "2024-03-24T04:00:00Z"},
		// Havana, 2025-03-09: at 00:00 CST (-5, 05:00Z) the clock jumps to
		// 01:00 CDT. The 9th starts at 01:00 CDT = 05:00Z (not 00:00 CDT =
		// 04:00Z, which is 23:00 CST on the 8th) and ends at 00:00 CDT on
		// the 10th = 04:00Z.
		{"havana midnight gap", "America/Havana", "2025-03-09", "2025-03-10", "2025-03-09T05:00:00Z", "2025-03-10T04:00:00Z"},
		// The 8th starts at 00:00 CST = 05:00Z and ends where the 9th
		// starts, 05:00Z on the 9th.
		{"havana day before the gap", "America/Havana", "2025-03-08", "2025-03-09", "2025-03-08T05:00:00Z", "2025-03-09T05:00:00Z"},
		// Havana, 2025-11-02: at 01:00 CDT (-4, 05:00Z) the clock goes back
		// to 00:00 CST, so 00:00 of the 2nd happens at 04:00Z and again at
		// 05:00Z. The 2nd starts at the first, 04:00Z, and ends at 00:00
		// CST on the 3rd = 05:00Z: a 25-hour day.
		{"havana midnight repeat", "America/Havana", "2025-11-02", "2025-11-03", "2025-11-02T04:00:00Z", "2025-11-03T05:00:00Z"},
		// The 1st: 00:00 CDT = 04:00Z to the first midnight of the 2nd.
		{"havana day before the repeat", "America/Havana", "2025-11-01", "2025-11-02", "2025-11-01T04:00:00Z", "2025-11-02T04:00:00Z"},
		// Santiago, 2025-09-07: 00:00 -04 jumps to 01:00 -03 at 04:00Z.
		// The 6th: 00:00 -04 = 04:00Z to 04:00Z on the 7th.
		{"santiago midnight gap", "America/Santiago", "2025-09-06", "2025-09-07", "2025-09-06T04:00:00Z", "2025-09-07T04:00:00Z"},
		// Santiago, 2025-04-06: 00:00 -03 (03:00Z) goes back to 23:00 -04
		// on the 5th; the 6th begins once, at 00:00 -04 = 04:00Z.
		{"santiago repeat before midnight", "America/Santiago", "2025-04-06", "2025-04-07", "2025-04-06T04:00:00Z", "2025-04-07T04:00:00Z"},
		// Coyhaique, 2024-09-08: 00:00 -04 jumps to 01:00 -03 at 04:00Z.
		{"coyhaique midnight gap", "America/Coyhaique", "2024-09-08", "2024-09-09", "2024-09-08T04:00:00Z", "2024-09-09T03:00:00Z"},
		// Azores, 2025-03-30: 00:00 -01 jumps to 01:00 +00 at 01:00Z. The
		// 30th: 01:00Z to 00:00 +00 on the 31st = 00:00Z.
		{"azores midnight gap", "Atlantic/Azores", "2025-03-30", "2025-03-31", "2025-03-30T01:00:00Z", "2025-03-31T00:00:00Z"},
		// Azores, 2025-10-26: 01:00 +00 goes back to 00:00 -01 at 01:00Z:
		// midnight of the 26th at 00:00Z and again at 01:00Z. The 25th
		// ends at the first, 00:00Z.
		{"azores midnight repeat", "Atlantic/Azores", "2025-10-25", "2025-10-26", "2025-10-25T00:00:00Z", "2025-10-26T00:00:00Z"},
		// Scoresbysund, 2023-03-26: 00:00 -01 jumps to 01:00 +00 at
		// 01:00Z.
		{"scoresbysund midnight gap", "America/Scoresbysund", "2023-03-25", "2023-03-26", "2023-03-25T01:00:00Z", "2023-03-26T01:00:00Z"},
		// Scoresbysund, 2025-03-30: 23:00 -02 on the 29th jumps to 00:00
		// -01 at 01:00Z. Midnight exists: the 30th starts at 01:00Z; the
		// 29th starts at 00:00 -02 = 02:00Z and lasts 23 hours.
		{"scoresbysund gap before midnight", "America/Scoresbysund", "2025-03-29", "2025-03-30", "2025-03-29T02:00:00Z", "2025-03-30T01:00:00Z"},
		// Amman, 2022-02-25: 00:00 +02 jumps to 01:00 +03 at 22:00Z on the
		// 24th. The 25th starts then and ends at 00:00 +03 on the 26th =
		// 21:00Z on the 25th.
		{"amman midnight gap", "Asia/Amman", "2022-02-25", "2022-02-26", "2022-02-24T22:00:00Z", "2022-02-25T21:00:00Z"},
		// Amman, 2021-10-29: 01:00 +03 goes back to 00:00 +02 at 22:00Z on
		// the 28th: midnight of the 29th at 21:00Z and 22:00Z. The 28th
		// ends at the first.
		{"amman midnight repeat", "Asia/Amman", "2021-10-28", "2021-10-29", "2021-10-27T21:00:00Z", "2021-10-28T21:00:00Z"},
		// Gaza, 2022-03-27: 00:00 +02 jumps to 01:00 +03 at 22:00Z on the
		// 26th.
		{"gaza midnight gap", "Asia/Gaza", "2022-03-27", "2022-03-28", "2022-03-26T22:00:00Z", "2022-03-27T21:00:00Z"},
		// Gaza, 2021-10-29: 01:00 +03 back to 00:00 +02 at 22:00Z on the
		// 28th; the 29th starts at the first midnight, 21:00Z on the 28th,
		// and lasts 25 hours, to 00:00 +02 on the 30th = 22:00Z.
		{"gaza midnight repeat", "Asia/Gaza", "2021-10-29", "2021-10-30", "2021-10-28T21:00:00Z", "2021-10-29T22:00:00Z"},
		// Hebron, 2022-03-27: as Gaza.
		{"hebron midnight gap", "Asia/Hebron", "2022-03-26", "2022-03-27", "2022-03-25T22:00:00Z", "2022-03-26T22:00:00Z"},
		// Hebron, 2020-10-24: 01:00 +03 back to 00:00 +02 at 22:00Z on the
		// 23rd; the 24th starts at 00:00 +03 = 21:00Z on the 23rd.
		{"hebron midnight repeat", "Asia/Hebron", "2020-10-24", "2020-10-25", "2020-10-23T21:00:00Z", "2020-10-24T22:00:00Z"},
		// Casey, 2023-03-09: 03:00 +11 goes back to 00:00 +08 at 16:00Z on
		// the 8th, so 00:00-03:00 of the 9th happens twice. The 9th starts
		// at 00:00 +11 = 13:00Z on the 8th and ends at 00:00 +08 on the
		// 10th = 16:00Z on the 9th: a 27-hour day.
		{"casey midnight repeat", "Antarctica/Casey", "2023-03-09", "2023-03-10", "2023-03-08T13:00:00Z", "2023-03-09T16:00:00Z"},
		// Casey, 2020-10-04: 00:01 +08 jumps to 03:01 +11 at 16:01Z on the
		// 3rd; midnight itself exists (00:00 +08 = 16:00Z on the 3rd). The
		// 4th ends at 00:00 +11 on the 5th = 13:00Z on the 4th.
		{"casey gap a minute after midnight", "Antarctica/Casey", "2020-10-04", "2020-10-05", "2020-10-03T16:00:00Z", "2020-10-04T13:00:00Z"},
		// Vostok, 2023-12-18: 02:00 +07 goes back to 00:00 +05 at 19:00Z on
		// the 17th. The 18th starts at 00:00 +07 = 17:00Z on the 17th and
		// ends at 00:00 +05 on the 19th = 19:00Z on the 18th.
		{"vostok midnight repeat", "Antarctica/Vostok", "2023-12-18", "2023-12-19", "2023-12-17T17:00:00Z", "2023-12-18T19:00:00Z"},
		// New York changes at 02:00: midnight is ordinary. 2025-03-09
		// starts at 00:00 EST = 05:00Z and ends at 00:00 EDT on the 10th =
		// 04:00Z.
		{"new york gap day", "America/New_York", "2025-03-09", "2025-03-10", "2025-03-09T05:00:00Z", "2025-03-10T04:00:00Z"},
		// Berlin changes at 02:00/03:00: 2025-10-26 starts at 00:00 CEST =
		// 22:00Z on the 25th and ends at 00:00 CET on the 27th = 23:00Z on
		// the 26th.
		{"berlin repeat day", "Europe/Berlin", "2025-10-26", "2025-10-27", "2025-10-25T22:00:00Z", "2025-10-26T23:00:00Z"},
	})
}

// TestBlackoutLocalDateTimesInGapsAndRepeats pins the rule for local
// date-times: the same as for window starts. A wall-clock time that does
// not exist (spring-forward gap) means the first instant after the gap; one
// that happens twice (fall-back) means the first occurrence. Either way
// round of UTC.
func TestBlackoutLocalDateTimesInGapsAndRepeats(t *testing.T) {
	checkBlackouts(t, []blackoutCase{
		// Berlin, 2025-10-26: 03:00 CEST goes back to 02:00 CET at 01:00Z.
		// 02:30 happens at 02:30 CEST = 00:30Z and at 02:30 CET = 01:30Z:
		// the first. 04:00 CET = 03:00Z.
		{"berlin repeat", "Europe/Berlin", "2025-10-26T02:30:00", "2025-10-26T04:00:00", "2025-10-26T00:30:00Z", "2025-10-26T03:00:00Z"},
		// Berlin, 2025-03-30: 02:00 CET jumps to 03:00 CEST at 01:00Z.
		// 02:30 does not exist: the gap ends at 03:00 CEST = 01:00Z. 03:30
		// CEST = 01:30Z.
		{"berlin gap", "Europe/Berlin", "2025-03-30T02:30:00", "2025-03-30T03:30:00", "2025-03-30T01:00:00Z", "2025-03-30T01:30:00Z"},
		// New York, 2025-03-09: 02:00 EST jumps to 03:00 EDT at 07:00Z.
		// 02:30 becomes 03:00 EDT = 07:00Z, not 01:30 EST. 03:30 EDT =
		// 07:30Z.
		{"new york gap", "America/New_York", "2025-03-09T02:30:00", "2025-03-09T03:30:00", "2025-03-09T07:00:00Z", "2025-03-09T07:30:00Z"},
		// New York, 2025-11-02: 02:00 EDT goes back to 01:00 EST at 06:00Z.
		// 01:30 happens at 05:30Z (EDT) and 06:30Z (EST): the first.
		// 01:59 likewise at 05:59Z.
		{"new york repeat", "America/New_York", "2025-11-02T01:30:00", "2025-11-02T01:59:00", "2025-11-02T05:30:00Z", "2025-11-02T05:59:00Z"},
		// Asuncion, 2023-10-01: 00:30 lies in the midnight gap, which ends
		// at 01:00 -03 = 04:00Z. 01:30 -03 = 04:30Z.
		{"asuncion gap", "America/Asuncion", "2023-10-01T00:30:00", "2023-10-01T01:30:00", "2023-10-01T04:00:00Z", "2023-10-01T04:30:00Z"},
		// Asuncion, 2024-03-24: 23:00-24:00 of the 23rd happens at -03
		// (02:00Z-03:00Z on the 24th) and again at -04. 23:30 is first at
		// 23:30 -03 = 02:30Z; the 24th's 00:30 is 00:30 -04 = 04:30Z.
		{"asuncion repeat", "America/Asuncion", "2024-03-23T23:30:00", "2024-03-24T00:30:00", "2024-03-24T02:30:00Z", "2024-03-24T04:30:00Z"},
		// Havana, 2025-03-09: 00:30 lies in the midnight gap, which ends
		// at 01:00 CDT = 05:00Z. 02:00 CDT = 06:00Z.
		{"havana gap", "America/Havana", "2025-03-09T00:30:00", "2025-03-09T02:00:00", "2025-03-09T05:00:00Z", "2025-03-09T06:00:00Z"},
		// Havana, 2025-11-02: 00:00-01:00 happens at CDT (04:00Z-05:00Z)
		// and again at CST. 00:30 is first at 04:30Z; 00:59 at 04:59Z.
		{"havana repeat", "America/Havana", "2025-11-02T00:30:00", "2025-11-02T00:59:00", "2025-11-02T04:30:00Z", "2025-11-02T04:59:00Z"},
		// Santiago, 2025-04-05: 23:00-24:00 happens at -03 (02:00Z-03:00Z
		// on the 6th) and at -04. 23:30 is first at 02:30Z.
		{"santiago repeat", "America/Santiago", "2025-04-05T23:30:00", "2025-04-06T00:30:00", "2025-04-06T02:30:00Z", "2025-04-06T04:30:00Z"},
		// Santiago, 2025-09-07: 00:15 lies in the midnight gap (ends 01:00
		// -03 = 04:00Z).
		{"santiago gap", "America/Santiago", "2025-09-07T00:15:00", "2025-09-07T01:15:00", "2025-09-07T04:00:00Z", "2025-09-07T04:15:00Z"},
		// Azores, 2025-03-30: 00:30 in the gap (ends 01:00 +00 = 01:00Z).
		// Azores, 2025-10-26: 00:30 first at 00:30 +00 = 00:30Z.
		{"azores gap and repeat", "Atlantic/Azores", "2025-03-30T00:30:00", "2025-10-26T00:30:00", "2025-03-30T01:00:00Z", "2025-10-26T00:30:00Z"},
		// Scoresbysund, 2025-03-29: 23:30 -02 lies in the gap 23:00-24:00,
		// which ends at 00:00 -01 = 01:00Z on the 30th. 2025-10-25: 23:30
		// happens at -01 (00:30Z on the 26th) and at -02: the first.
		{"scoresbysund gap and repeat", "America/Scoresbysund", "2025-03-29T23:30:00", "2025-10-25T23:30:00", "2025-03-30T01:00:00Z", "2025-10-26T00:30:00Z"},
		// Coyhaique, 2024-09-08: 00:45 in the midnight gap (ends 04:00Z).
		{"coyhaique gap", "America/Coyhaique", "2024-09-08T00:45:00", "2024-09-08T02:00:00", "2024-09-08T04:00:00Z", "2024-09-08T05:00:00Z"},
		// Amman, 2022-02-25: 00:30 in the gap (ends 01:00 +03 = 22:00Z on
		// the 24th). 2021-10-29: 00:30 first at 00:30 +03 = 21:30Z on the
		// 28th.
		{"amman gap and repeat", "Asia/Amman", "2021-10-29T00:30:00", "2022-02-25T00:30:00", "2021-10-28T21:30:00Z", "2022-02-24T22:00:00Z"},
		// Gaza, 2022-03-27: 00:30 in the gap (ends 22:00Z on the 26th).
		// Gaza, 2022-10-29: 02:00 +03 back to 01:00 +02 at 23:00Z on the
		// 28th; 01:30 first at 01:30 +03 = 22:30Z.
		{"gaza gap and repeat", "Asia/Gaza", "2022-03-27T00:30:00", "2022-10-29T01:30:00", "2022-03-26T22:00:00Z", "2022-10-28T22:30:00Z"},
		// Hebron, 2025-04-12: 02:00 +02 jumps to 03:00 +03 at 00:00Z;
		// 02:30 becomes 00:00Z. 2025-10-25: 02:00 +03 back to 01:00 +02 at
		// 23:00Z on the 24th; 01:30 first at 22:30Z.
		{"hebron gap and repeat", "Asia/Hebron", "2025-04-12T02:30:00", "2025-10-25T01:30:00", "2025-04-12T00:00:00Z", "2025-10-24T22:30:00Z"},
		// Casey, 2020-10-04: 00:01 +08 jumps to 03:01 +11 at 16:01Z on the
		// 3rd; 01:00 becomes 16:01Z. 2023-03-09: 01:00 first at 01:00 +11
		// = 14:00Z on the 8th.
		{"casey gap and repeat", "Antarctica/Casey", "2020-10-04T01:00:00", "2023-03-09T01:00:00", "2020-10-03T16:01:00Z", "2023-03-08T14:00:00Z"},
		// Vostok, 2023-12-18: 00:00-02:00 happens at +07 and again at +05.
		// 01:00 first at 01:00 +07 = 18:00Z on the 17th; 02:00 once, at
		// 02:00 +05 = 21:00Z.
		{"vostok repeat", "Antarctica/Vostok", "2023-12-18T01:00:00", "2023-12-18T02:00:00", "2023-12-17T18:00:00Z", "2023-12-17T21:00:00Z"},
	})
}
