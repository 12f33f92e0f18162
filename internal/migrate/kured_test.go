package migrate_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/offpeak/offpeak/internal/migrate"
)

// kuredAllows is kured's time window as its code defines it: t's weekday
// in the zone must be listed; start and end are that day's wall-clock
// times (Go's time.Date in the zone), end counted to the last nanosecond of
// its second, both ends inside. When start is after end, an instant before
// the end belongs to a window that began the evening before, anything else
// to one that ends the next morning — but the weekday checked is always
// the instant's own.
func kuredAllows(loc *time.Location, days []time.Weekday, start, end time.Duration) func(time.Time) bool {
	return func(t time.Time) bool {
		lt := t.In(loc)
		listed := false
		for _, d := range days {
			listed = listed || d == lt.Weekday()
		}
		if !listed {
			return false
		}
		at := func(d time.Duration, nsec int) time.Time {
			return time.Date(lt.Year(), lt.Month(), lt.Day(), int(d/time.Hour), int(d%time.Hour/time.Minute), int(d%time.Minute/time.Second), nsec, loc)
		}
		s, e := at(start, 0), at(end, 1e9-1)
		if start > end {
			if lt.Before(e) {
				s = s.Add(-24 * time.Hour)
			} else {
				e = e.Add(24 * time.Hour)
			}
		}
		return !lt.Before(s) && !lt.After(e)
	}
}

var weekdays = []time.Weekday{time.Monday, time.Tuesday, time.Wednesday, time.Thursday, time.Friday}

func TestKuredManifest(t *testing.T) {
	res, err := migrate.Kured(read(t, "kured/kured-ds.yaml"), migrate.Options{Now: notesNow})
	if err != nil {
		t.Fatal(err)
	}
	p, cal := load(t, res)
	if p.Strategy != "window" || p.Lock.Plugin != "etcd" || p.Lock.Slots != 2 {
		t.Fatalf("strategy %q lock %q slots %d", p.Strategy, p.Lock.Plugin, p.Lock.Slots)
	}
	// KURED_LOCK_TTL=30m in the env overrides --lock-ttl=10m, as in kured.
	if p.Lock.StaleAfter.D() != 30*time.Minute {
		t.Errorf("stale_after %v", p.Lock.StaleAfter)
	}
	// /sentinel is the host's /var/run, mounted by the DaemonSet.
	if len(p.Detect) != 1 || p.Detect[0].Path != "/var/run/reboot-required" {
		t.Errorf("detect %+v", p.Detect)
	}
	if len(p.Health) != 1 || p.Health[0].Plugin != "prometheus" || p.Health[0].Phase != "pre-reboot" ||
		p.Health[0].Config["url"] != "http://prometheus.monitoring.svc.cluster.local:9090" ||
		!equalAny(p.Health[0].Config["ignore"], []any{"RebootRequired", "Watchdog"}) || p.Health[0].Config["include_pending"] != true {
		t.Errorf("health %+v", p.Health)
	}
	if p.Reboot.Warn.D() != 90*time.Second {
		t.Errorf("reboot.warn %v", p.Reboot.Warn)
	}
	// Monday to Friday, 22:00 to 06:00 in Berlin. kured counts each listed
	// day's 00:00–06:00 and 22:00–24:00: Monday morning alone, then Monday
	// 22:00 to Tuesday 06:00 … Thursday 22:00 to Friday 06:00, and Friday
	// 22:00 to midnight. (CET until 2026-03-29, then CEST.)
	equalSpans(t, "offpeak next", nextWindows(cal, "2026-03-23T00:00:00Z", 7), []span{
		{"2026-03-22T23:00:00Z", "2026-03-23T05:00:00Z"},
		{"2026-03-23T21:00:00Z", "2026-03-24T05:00:00Z"},
		{"2026-03-24T21:00:00Z", "2026-03-25T05:00:00Z"},
		{"2026-03-25T21:00:00Z", "2026-03-26T05:00:00Z"},
		{"2026-03-26T21:00:00Z", "2026-03-27T05:00:00Z"},
		{"2026-03-27T21:00:00Z", "2026-03-27T23:00:00Z"},
		{"2026-03-29T22:00:00Z", "2026-03-30T04:00:00Z"},
	})
	allows := kuredAllows(mustZone("Europe/Berlin"), weekdays, 22*time.Hour, 6*time.Hour)
	// Berlin changes its clocks on Sunday mornings, outside these windows:
	// the two agree across both changes of 2026.
	equalDiffs(t, "spring", disagreements(cal, "kured", allows, "2026-03-23T00:00:00Z", "2026-04-01T00:00:00Z"), nil)
	equalDiffs(t, "autumn", disagreements(cal, "kured", allows, "2026-10-19T00:00:00Z", "2026-10-28T00:00:00Z"), nil)
	// Edges: kured allows Monday 06:00:00 itself (to the end of that
	// second); offpeak's window is half-open. Both allow 05:59:59 and
	// 22:00:00, neither 06:00:01 or 21:59:59.
	for _, tc := range []struct {
		at           string
		kured, ourss bool
	}{
		{"2026-03-24T04:59:59Z", true, true},
		{"2026-03-24T05:00:00Z", true, false},
		{"2026-03-24T05:00:01Z", false, false},
		{"2026-03-24T20:59:59Z", false, false},
		{"2026-03-24T21:00:00Z", true, true},
	} {
		_, ours := cal.Allowed(ts(tc.at))
		if allows(ts(tc.at)) != tc.kured || ours != tc.ourss {
			t.Errorf("%s: kured %v offpeak %v, want %v %v", tc.at, allows(ts(tc.at)), ours, tc.kured, tc.ourss)
		}
	}
	for _, want := range []string{"kured/kured-ds.yaml:62: --start-time=\"22:00\"", "kured/kured-ds.yaml:53: KURED_LOCK_TTL=\"30m\"", "kured/kured-ds.yaml:55)."} {
		if !strings.Contains(string(res.Policy), want) {
			t.Errorf("policy lacks %q:\n%s", want, res.Policy)
		}
	}
	for _, want := range []string{"kured-ds.yaml:69: --drain-timeout", "kured-ds.yaml:71: --blocking-pod-selector"} {
		if !hasNote(res.Unmapped, want) {
			t.Errorf("unmapped %v lacks %q", res.Unmapped, want)
		}
	}
	if !hasNote(res.Notes, "etcd.invalid") && !hasNote(res.Notes, "[lock.config] endpoints") {
		t.Errorf("notes %v", res.Notes)
	}
}

// Weekend nights 01:00–05:00 in New York. kured's window is wall-clock
// 01:00 to 05:00 on the Sunday the clocks change too; offpeak's opens at
// 01:00 and lasts four hours of real time.
func TestKuredClockChanges(t *testing.T) {
	res, err := migrate.Kured(read(t, "kured/kured.flags"), migrate.Options{Now: notesNow})
	if err != nil {
		t.Fatal(err)
	}
	p, cal := load(t, res)
	if p.Lock.Slots != 3 || p.Agent.Interval.D() != 30*time.Minute || p.Windows[0].Start != "0 1 * * SUN,SAT" {
		t.Fatalf("slots %d interval %v windows %+v", p.Lock.Slots, p.Agent.Interval, p.Windows)
	}
	// --alert-filter-match-only: only alerts whose name matches Reboot.*
	// anywhere count; match_regex is anchored, hence the .*(?:…).*.
	if !equalAny(p.Health[0].Config["match_regex"], map[string]any{"alertname": ".*(?:Reboot.*).*"}) {
		t.Errorf("health config %+v", p.Health[0].Config)
	}
	allows := kuredAllows(mustZone("America/New_York"), []time.Weekday{time.Saturday, time.Sunday}, time.Hour, 5*time.Hour)
	// 2026-03-08: time.Date(01:00) = 01:00 EST = 06:00Z; time.Date(05:00)
	// = 05:00 EDT = 09:00Z: three real hours. offpeak: 06:00Z + 4h.
	equalDiffs(t, "spring", disagreements(cal, "kured", allows, "2026-03-06T00:00:00Z", "2026-03-10T00:00:00Z"), []diff{
		{"offpeak", "2026-03-08T09:00:00Z", "2026-03-08T10:00:00Z"},
	})
	// 2026-11-01: time.Date(01:00) is the first 01:00 (EDT, 05:00Z);
	// time.Date(05:00) = 05:00 EST = 10:00Z: five real hours. offpeak:
	// 05:00Z + 4h.
	equalDiffs(t, "autumn", disagreements(cal, "kured", allows, "2026-10-30T00:00:00Z", "2026-11-03T00:00:00Z"), []diff{
		{"kured", "2026-11-01T09:00:00Z", "2026-11-01T10:00:00Z"},
	})
	for _, want := range [][]string{{"2026-03-08", "skips 02:00–03:00", "\"kured\""}, {"2026-11-01", "repeats 01:00–02:00"}} {
		if !hasNote(res.Notes, want...) {
			t.Errorf("no note says %q: %v", want, res.Notes)
		}
	}
	if !hasNote(res.Unmapped, "kured.flags:9: --notify-url") {
		t.Errorf("unmapped %v", res.Unmapped)
	}
}

func TestKuredFlags(t *testing.T) {
	tests := []struct {
		name, flags string
		strategy    string
		next        []span // from 2026-06-01T00:00:00Z (a Monday)
		check       func(t *testing.T, res *migrate.Result)
	}{
		{
			// kured's defaults: every day, all day, so a slot at any time.
			name: "defaults", flags: "", strategy: "etcd-lock",
		},
		{
			// Friday only, 22:00–02:00: kured counts Friday 00:00–02:00 and
			// Friday 22:00–24:00, not Saturday's early hours.
			name: "past midnight on one day", flags: "--reboot-days=fr --start-time=22:00 --end-time=02:00", strategy: "window",
			next: []span{
				{"2026-06-05T00:00:00Z", "2026-06-05T02:00:00Z"},
				{"2026-06-05T22:00:00Z", "2026-06-06T00:00:00Z"},
				{"2026-06-12T00:00:00Z", "2026-06-12T02:00:00Z"},
			},
		},
		{
			name: "numbers, 12-hour clock, repeated days flag", flags: "--reboot-days 1 --reboot-days=3 --start-time=3pm --end-time=04:30pm", strategy: "window",
			next: []span{
				{"2026-06-01T15:00:00Z", "2026-06-01T16:30:00Z"},
				{"2026-06-03T15:00:00Z", "2026-06-03T16:30:00Z"},
			},
		},
		{
			name: "no day", flags: "--reboot-days=", strategy: "off",
		},
		{
			name: "seconds", flags: "--start-time=01:00:30 --end-time=01:10:30", strategy: "window",
			next: []span{{"2026-06-01T01:01:00Z", "2026-06-01T01:10:00Z"}},
			check: func(t *testing.T, res *migrate.Result) {
				if !hasNote(res.Notes, "next whole minute") || !hasNote(res.Notes, "whole minute before it") {
					t.Errorf("notes %v", res.Notes)
				}
			},
		},
		{
			name: "environment overrides flags", flags: "--concurrency=2\nKURED_CONCURRENCY=4\n--reboot-command='/usr/bin/systemctl reboot'\n--reboot-sentinel-command=/usr/bin/needs-restarting\n", strategy: "etcd-lock",
			check: func(t *testing.T, res *migrate.Result) {
				p, _ := load(t, res)
				if p.Lock.Slots != 4 || p.Reboot.Method != "systemctl" || len(p.Detect) != 2 {
					t.Errorf("slots %d method %q detect %+v", p.Lock.Slots, p.Reboot.Method, p.Detect)
				}
				if !hasNote(res.Unmapped, "--reboot-sentinel-command") {
					t.Errorf("unmapped %v", res.Unmapped)
				}
			},
		},
		{
			// As kured's flag library reads them: "" is UTC, 0x2 is 2.
			name: "empty zone, hexadecimal concurrency", flags: "--time-zone= --concurrency=0x2 --end-time=23:59", strategy: "window",
			next: []span{{"2026-06-01T00:00:00Z", "2026-06-01T23:59:00Z"}},
			check: func(t *testing.T, res *migrate.Result) {
				p, _ := load(t, res)
				if p.Lock.Slots != 2 || p.Windows[0].Timezone != "UTC" || !hasNote(res.Notes, "23:59:00 (its --end-time)") {
					t.Errorf("slots %d zone %q notes %v", p.Lock.Slots, p.Windows[0].Timezone, res.Notes)
				}
			},
		},
		{
			// The URL must keep its password, the comments must not show it.
			name: "credentials in a URL", flags: "--prometheus-url=https://alerts:pa55@prom.example:9090", strategy: "etcd-lock",
			check: func(t *testing.T, res *migrate.Result) {
				p, _ := load(t, res)
				if p.Health[0].Config["url"] != "https://alerts:pa55@prom.example:9090" || strings.Count(string(res.Policy), "pa55") != 1 ||
					!strings.Contains(string(res.Policy), "alerts:xxxxx@prom.example") {
					t.Errorf("config %+v\n%s", p.Health[0].Config, res.Policy)
				}
			},
		},
		{
			name: "an alert filter offpeak cannot express", flags: "--prometheus-url=http://p:9090 --alert-filter-regexp=^Reboot --alert-firing-only", strategy: "etcd-lock",
			check: func(t *testing.T, res *migrate.Result) {
				p, _ := load(t, res)
				if p.Health[0].Config["include_pending"] != false || p.Health[0].Config["ignore"] != nil || !hasNote(res.Unmapped, "--alert-filter-regexp", "every alert blocks") {
					t.Errorf("config %+v unmapped %v", p.Health[0].Config, res.Unmapped)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := migrate.Kured(inline("kured.flags", tt.flags), migrate.Options{Now: notesNow})
			if err != nil {
				t.Fatal(err)
			}
			p, cal := load(t, res)
			if p.Strategy != tt.strategy {
				t.Fatalf("strategy %q\n%s", p.Strategy, res.Policy)
			}
			if tt.strategy != "window" && len(p.Windows) != 0 {
				t.Errorf("windows %+v", p.Windows)
			}
			if tt.next != nil {
				equalSpans(t, "offpeak next", nextWindows(cal, "2026-06-01T00:00:00Z", len(tt.next)), tt.next)
			}
			if tt.check != nil {
				tt.check(t, res)
			}
		})
	}
}

// kuredAgreement checks offpeak's windows against kured's for the shapes
// of window kured knows, over a week, in a zone with no clock change then.
func TestKuredAgreement(t *testing.T) {
	tests := []struct {
		flags      string
		days       []time.Weekday
		start, end time.Duration
	}{
		{"--reboot-days=mo,tu,we,th,fr --start-time=22:00 --end-time=06:00", weekdays, 22 * time.Hour, 6 * time.Hour},
		{"--reboot-days=fr,sa,su,mo --start-time=23:30 --end-time=00:30", []time.Weekday{time.Friday, time.Saturday, time.Sunday, time.Monday}, 23*time.Hour + 30*time.Minute, 30 * time.Minute},
		{"--reboot-days=we --start-time=9 --end-time=17", []time.Weekday{time.Wednesday}, 9 * time.Hour, 17 * time.Hour},
		{"--reboot-days=su,tu,th,sa --start-time=20:00 --end-time=19:00", []time.Weekday{time.Sunday, time.Tuesday, time.Thursday, time.Saturday}, 20 * time.Hour, 19 * time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.flags, func(t *testing.T) {
			res, err := migrate.Kured(inline("kured.flags", tt.flags+" --time-zone=Asia/Tokyo"), migrate.Options{Now: notesNow})
			if err != nil {
				t.Fatal(err)
			}
			_, cal := load(t, res)
			allows := kuredAllows(mustZone("Asia/Tokyo"), tt.days, tt.start, tt.end)
			equalDiffs(t, tt.flags, disagreements(cal, "kured", allows, "2026-06-01T00:00:00Z", "2026-06-09T00:00:00Z"), nil)
		})
	}
}

func TestKuredErrors(t *testing.T) {
	tests := []struct{ flags, want string }{
		{"--reboot-days=mon\n--start-tme=22:00\n", "kured.flags:2: --start-tme: unknown kured flag; did you mean --start-time?"},
		{"--reboot-days=someday\n", "kured.flags:1: --reboot-days: invalid weekday: someday"},
		{"--reboot-days=7\n", "number out of range"},
		{"--start-time=noon\n", "kured.flags:1: --start-time: invalid time format: noon"},
		{"--time-zone=Mars/Olympus\n", `unknown time zone "Mars/Olympus"`},
		{"--lock-ttl=forever\n", `kured.flags:1: --lock-ttl: "forever" is not a duration`},
		{"--concurrency=0\n", "--concurrency: must be at least 1"},
		{"--alert-filter-regexp=(\n", "not a regular expression"},
		{"--period\n", "--period: needs a value"},
		{"reboot-days=mon\n", "not a kured flag"},
		{"KURED_NO_SUCH=1\n", "kured.flags:1: KURED_NO_SUCH: no kured flag --no-such"},
		{"--start-time='22:00\n", "unterminated ' quote"},
		{"--start-time=01:00:00 --end-time=01:00:00\n", "single second"},
		// Found by FuzzKured: an empty sentinel gave an invalid [[detect]].
		{"--reboot-sentinel=\n", `kured.flags:1: --reboot-sentinel: "": offpeak needs the sentinel's absolute path`},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			_, err := migrate.Kured(inline("kured.flags", tt.flags), migrate.Options{})
			if !errors.Is(err, migrate.ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v, want %q", err, tt.want)
			}
		})
	}
	for _, tt := range []struct{ yaml, want string }{
		{"apiVersion: v1\nkind: ConfigMap\n", "no DaemonSet with a kured container"},
		{"apiVersion: apps/v1\nkind: DaemonSet\nspec:\n  template:\n    spec:\n      containers:\n        - name: kured\n          args:\n            - --drain-timout=1m\n", "ds.yaml:9: --drain-timout: unknown kured flag; did you mean --drain-timeout?"},
		{"kind: DaemonSet\nspec:\n\ttemplate: {}\n", "tabs are not allowed"},
	} {
		t.Run(tt.want, func(t *testing.T) {
			_, err := migrate.Kured(inline("ds.yaml", tt.yaml), migrate.Options{})
			if !errors.Is(err, migrate.ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v, want %q", err, tt.want)
			}
		})
	}
}
