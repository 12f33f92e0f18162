package migrate_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/offpeak/offpeak/internal/migrate"
)

// zWin is one weekday entry of zincati's weekly calendar.
type zWin struct {
	day          time.Weekday
	hour, minute int
	minutes      int
}

// zincatiAllows is zincati's periodic strategy as its code defines it: t is
// read on the wall clock of the zone as a minute of the week (Monday 00:00
// is 0); each window covers the minutes from its start through start +
// length_minutes inclusive, wrapping from Sunday into Monday.
func zincatiAllows(loc *time.Location, wins ...zWin) func(time.Time) bool {
	const week = 7 * 24 * 60
	minuteOfWeek := func(d time.Weekday, h, m int) int { return (int(d)+6)%7*24*60 + h*60 + m }
	return func(t time.Time) bool {
		lt := t.In(loc)
		at := minuteOfWeek(lt.Weekday(), lt.Hour(), lt.Minute())
		for _, w := range wins {
			s := minuteOfWeek(w.day, w.hour, w.minute)
			e := s + w.minutes
			if (at >= s && at <= e) || (e >= week && at <= e-week) {
				return true
			}
		}
		return false
	}
}

func TestZincatiPeriodic(t *testing.T) {
	// zincati's own directories, in its order; the files sort by name
	// across them (10-identity, 30-updates-strategy, 55-…, 56-…).
	res, err := migrate.Zincati(read(t,
		"zincati/periodic/usr/lib/zincati/config.d/10-identity.toml",
		"zincati/periodic/usr/lib/zincati/config.d/30-updates-strategy.toml",
		"zincati/periodic/etc/zincati/config.d/56-wednesday.toml",
		"zincati/periodic/etc/zincati/config.d/55-updates-strategy.toml",
	), migrate.Options{Now: notesNow})
	if err != nil {
		t.Fatal(err)
	}
	p, cal := load(t, res)
	if p.Strategy != "window" || p.Lock.Plugin != "file" || p.Installer.Backend != "rpm-ostree" {
		t.Fatalf("strategy %q lock %q installer %q", p.Strategy, p.Lock.Plugin, p.Installer.Backend)
	}
	// The documentation's example: 23:30 UTC on Saturday and on Sunday for
	// 60 minutes, and 01:00 UTC on Wednesday for 30.
	equalSpans(t, "offpeak next", nextWindows(cal, "2026-03-02T06:00:00Z", 4), []span{
		{"2026-03-04T01:00:00Z", "2026-03-04T01:30:00Z"},
		{"2026-03-07T23:30:00Z", "2026-03-08T00:30:00Z"},
		{"2026-03-08T23:30:00Z", "2026-03-09T00:30:00Z"},
		{"2026-03-11T01:00:00Z", "2026-03-11T01:30:00Z"},
	})
	allows := zincatiAllows(time.UTC, zWin{time.Saturday, 23, 30, 60}, zWin{time.Sunday, 23, 30, 60}, zWin{time.Wednesday, 1, 0, 30})
	// In UTC the only difference is the minute zincati's code adds at each
	// window's end (its range includes start + length_minutes).
	equalDiffs(t, "a week", disagreements(cal, "zincati", allows, "2026-03-02T06:00:00Z", "2026-03-09T06:00:00Z"), []diff{
		{"zincati", "2026-03-04T01:30:00Z", "2026-03-04T01:31:00Z"},
		{"zincati", "2026-03-08T00:30:00Z", "2026-03-08T00:31:00Z"},
		{"zincati", "2026-03-09T00:30:00Z", "2026-03-09T00:31:00Z"},
	})
	if !strings.Contains(string(res.Policy), "# from zincati/periodic/etc/zincati/config.d/56-wednesday.toml:1:") ||
		!strings.Contains(string(res.Policy), "# from zincati/periodic/etc/zincati/config.d/55-updates-strategy.toml:2:") {
		t.Errorf("sources not named:\n%s", res.Policy)
	}
	if !hasNote(res.Notes, "rpm-ostree", "disable --now zincati") || !hasNote(res.Notes, "16:30:59") {
		t.Errorf("notes: %v", res.Notes)
	}
	if hasNote(res.Notes, "Clock change") {
		t.Errorf("a clock change note for UTC: %v", res.Notes)
	}
}

// The documentation's own time zone caveat: US/Eastern, Sunday 01:30 for
// 60 minutes. zincati keeps to the wall clock, so the window shrinks to
// 30 minutes when the clocks go forward and grows by 30 when they go back.
// offpeak opens at 01:30 and stays open 60 minutes of real time.
func TestZincatiClockChanges(t *testing.T) {
	res, err := migrate.Zincati(read(t, "zincati/dst/55-updates-strategy.toml"), migrate.Options{Now: notesNow})
	if err != nil {
		t.Fatal(err)
	}
	p, cal := load(t, res)
	if p.Strategy != "window" || len(p.Windows) != 1 || p.Windows[0].Timezone != "US/Eastern" || p.Windows[0].Start != "30 1 * * SUN" {
		t.Fatalf("%+v", p.Windows)
	}
	allows := zincatiAllows(mustZone("US/Eastern"), zWin{time.Sunday, 1, 30, 60})
	// 2026-03-08: 02:00 EST becomes 03:00 EDT. zincati: 01:30–01:59 EST =
	// [06:30Z, 07:00Z), then wall clock 03:00 is past its window. offpeak:
	// 01:30 EST + 60m = [06:30Z, 07:30Z), so 03:00–03:30 EDT is offpeak's
	// alone. The Sunday before, zincati's extra end minute 02:30 EST.
	equalDiffs(t, "spring", disagreements(cal, "zincati", allows, "2026-02-28T00:00:00Z", "2026-03-10T00:00:00Z"), []diff{
		{"zincati", "2026-03-01T07:30:00Z", "2026-03-01T07:31:00Z"},
		{"offpeak", "2026-03-08T07:00:00Z", "2026-03-08T07:30:00Z"},
	})
	// 2026-11-01: 02:00 EDT becomes 01:00 EST. zincati: 01:30–01:59 EDT =
	// [05:30Z, 06:00Z), then 01:30–02:30:59 EST = [06:30Z, 07:31Z).
	// offpeak: 01:30 EDT + 60m = [05:30Z, 06:30Z): 01:00–01:30 EST is
	// offpeak's alone, the repeated 01:30–02:31 EST zincati's.
	equalDiffs(t, "autumn", disagreements(cal, "zincati", allows, "2026-10-31T00:00:00Z", "2026-11-02T00:00:00Z"), []diff{
		{"offpeak", "2026-11-01T06:00:00Z", "2026-11-01T06:30:00Z"},
		{"zincati", "2026-11-01T06:30:00Z", "2026-11-01T07:31:00Z"},
	})
	equalSpans(t, "offpeak next", nextWindows(cal, "2026-03-07T00:00:00Z", 1), []span{{"2026-03-08T06:30:00Z", "2026-03-08T07:30:00Z"}})
	equalSpans(t, "offpeak next", nextWindows(cal, "2026-10-31T00:00:00Z", 1), []span{{"2026-11-01T05:30:00Z", "2026-11-01T06:30:00Z"}})
	for _, want := range [][]string{{"2026-03-08", "skips 02:00–03:00", "zincati-1"}, {"2026-11-01", "repeats 01:00–02:00", "zincati-1"}} {
		if !hasNote(res.Notes, want...) {
			t.Errorf("no note says %q: %v", want, res.Notes)
		}
	}
}

func TestZincatiFleetLock(t *testing.T) {
	res, err := migrate.Zincati(read(t, "zincati/fleetlock/55-updates-strategy.toml"), migrate.Options{Now: notesNow})
	if err != nil {
		t.Fatal(err)
	}
	p, cal := load(t, res)
	if p.Strategy != "etcd-lock" || p.Lock.Plugin != "fleetlock" || p.Node.Group != "workers" || len(p.Windows) != 0 {
		t.Fatalf("strategy %q lock %q group %q windows %d", p.Strategy, p.Lock.Plugin, p.Node.Group, len(p.Windows))
	}
	// zincati fills ${group} into the URL; so does the migration.
	if got := p.Lock.Config["url"]; got != "https://fleetlock.example.net:8443/workers/" {
		t.Errorf("url %v", got)
	}
	if ws := cal.Next(ts("2026-01-01T00:00:00Z"), 1); len(ws) != 0 {
		t.Errorf("windows %v: fleet_lock reboots at any time", ws)
	}
	if !hasNote(res.Unmapped, "cincinnati.base_url") || !hasNote(res.Notes, "app-specific") {
		t.Errorf("unmapped %v notes %v", res.Unmapped, res.Notes)
	}
}

func TestZincatiMerge(t *testing.T) {
	tests := []struct {
		name     string
		srcs     []migrate.Source
		strategy string
		windows  int
		check    func(t *testing.T, res *migrate.Result)
	}{
		{
			// A later file of the same name replaces the earlier one: an
			// empty /etc copy (a link to /dev/null) masks the vendor file.
			name:     "masked",
			srcs:     read(t, "zincati/mask/usr/lib/zincati/config.d/60-periodic.toml", "zincati/mask/etc/zincati/config.d/60-periodic.toml"),
			strategy: "reboot",
		},
		{
			name:     "unmasked",
			srcs:     read(t, "zincati/mask/usr/lib/zincati/config.d/60-periodic.toml"),
			strategy: "window", windows: 1,
		},
		{
			// Scalars: the last file wins; windows: every file adds.
			name: "scalars and windows",
			srcs: []migrate.Source{
				{Name: "10-a.toml", Data: []byte("[updates]\nstrategy = \"fleet_lock\"\n[[updates.periodic.window]]\ndays = [\"mon\"]\nstart_time = \"1:00\"\nlength_minutes = 10\n")},
				{Name: "20-b.toml", Data: []byte("[updates]\nstrategy = \"periodic\"\n[updates.periodic]\ntime_zone = \"Europe/Rome\"\n[[updates.periodic.window]]\ndays = [\"Friday\", \"tuesday\"]\nstart_time = \"22:05\"\nlength_minutes = 2880\n")},
			},
			strategy: "window", windows: 2,
			check: func(t *testing.T, res *migrate.Result) {
				p, _ := load(t, res)
				if p.Windows[0].Start != "0 1 * * MON" || p.Windows[1].Start != "5 22 * * TUE,FRI" || p.Windows[1].Duration.D() != 48*time.Hour || p.Windows[1].Timezone != "Europe/Rome" {
					t.Errorf("windows %+v", p.Windows)
				}
				if !hasNote(res.Notes, "20-b.toml:6", "refuses \"tuesday\"") {
					t.Errorf("notes %v", res.Notes)
				}
			},
		},
		{
			name:     "disabled",
			srcs:     inline("90-off.toml", "[updates]\nenabled = false\nallow_downgrade = true\n[identity]\nrollout_wariness = 0.5\n[agent.timing]\nsteady_interval_secs = 600\n[unknown]\nkey = 1\n"),
			strategy: "off",
			check: func(t *testing.T, res *migrate.Result) {
				for _, k := range []string{"90-off.toml:3: updates.allow_downgrade", "90-off.toml:5: identity.rollout_wariness", "90-off.toml:7: agent.timing.steady_interval_secs", "90-off.toml:8: unknown: not a zincati setting"} {
					if !hasNote(res.Unmapped, k) {
						t.Errorf("unmapped %v lacks %q", res.Unmapped, k)
					}
				}
			},
		},
		{
			name:     "localtime",
			srcs:     inline("55.toml", "[updates]\nstrategy = \"periodic\"\n[updates.periodic]\ntime_zone = \"localtime\"\n[[updates.periodic.window]]\ndays = [\"Sun\"]\nstart_time = \"04:00\"\nlength_minutes = 60\n"),
			strategy: "window", windows: 1,
			check: func(t *testing.T, res *migrate.Result) {
				p, _ := load(t, res)
				if p.Windows[0].Timezone != "UTC" || !hasNote(res.Notes, "/etc/localtime", "UTC") {
					t.Errorf("zone %q notes %v", p.Windows[0].Timezone, res.Notes)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := migrate.Zincati(tt.srcs, migrate.Options{Now: notesNow})
			if err != nil {
				t.Fatal(err)
			}
			p, _ := load(t, res)
			if p.Strategy != tt.strategy || len(p.Windows) != tt.windows {
				t.Fatalf("strategy %q windows %d\n%s", p.Strategy, len(p.Windows), res.Policy)
			}
			if tt.check != nil {
				tt.check(t, res)
			}
		})
	}
}

func TestZincatiErrors(t *testing.T) {
	win := func(body string) string {
		return "[updates]\nstrategy = \"periodic\"\n\n[[updates.periodic.window]]\n" + body
	}
	tests := []struct{ conf, want string }{
		{"[updates]\nstrategy = \"weekly\"\n", `55.toml:2: updates.strategy: unsupported strategy "weekly"`},
		{"[updates]\nstrategy = \"periodic\"\n", "55.toml:2: updates.periodic.window: strategy periodic needs at least one"},
		{"[updates]\nstrategy = \"fleet_lock\"\n", "updates.fleet_lock.base_url: strategy fleet_lock needs a non-empty base_url"},
		{win("days = [\"Mon\"]\nstart_time = \"24:00\"\nlength_minutes = 5\n"), `55.toml:6: updates.periodic.window.start_time: invalid time "24:00"`},
		{win("days = [\"Mon\"]\nstart_time = \"1:00\"\nlength_minutes = 0\n"), "55.toml:7: updates.periodic.window.length_minutes: must be greater than zero"},
		{win("days = [\"Mon\"]\nstart_time = \"1:00\"\nlength_minutes = 10081\n"), "longer than a week"},
		{win("days = [\"Lundi\"]\nstart_time = \"1:00\"\nlength_minutes = 5\n"), `55.toml:5: updates.periodic.window.days: unrecognized week day "Lundi"`},
		{win("days = [\"Mon\"]\nlength_minutes = 5\n"), "55.toml:4: updates.periodic.window: missing start_time"},
		{"[updates]\nenabled = \"no\"\n", "55.toml:2: updates.enabled: zincati wants a bool here, not a string"},
		{"[updates\n", "55.toml:2: "},
		{win("days = [\"Mon\"]\nstart_time = \"1:00\"\nlength_minutes = 5\n[updates.periodic]\ntime_zone = \"Mars/Olympus\"\n"), `unknown time zone "Mars/Olympus"`},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			_, err := migrate.Zincati(inline("55.toml", tt.conf), migrate.Options{})
			if !errors.Is(err, migrate.ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v, want %q", err, tt.want)
			}
		})
	}
}
