package migrate_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/offpeak/offpeak/internal/migrate"
)

// locksmithAllows is locksmith's reboot window as its documentation and
// timeutil.Periodic define it: the window starts at the start time on the
// day (weekday dow, or every day when dow < 0) computed with Go's time.Date
// in the host's local zone, lasts length of elapsed time, and includes both
// ends (DurationToStart(t) <= 0).
func locksmithAllows(loc *time.Location, dow time.Weekday, daily bool, hour, minute int, length time.Duration) func(time.Time) bool {
	return func(t time.Time) bool {
		ref := t.In(loc)
		at := func(days int) time.Time {
			return time.Date(ref.Year(), ref.Month(), ref.Day()+days, hour, minute, 0, 0, loc)
		}
		var start time.Time
		if daily {
			start = at(0)
			if ref.Before(start) { // yesterday's
				start = at(-1)
			}
		} else {
			start = at(int(dow) - int(ref.Weekday())) // this week's
			if ref.Before(start) {
				start = at(-(int(ref.Weekday()) + 7 - int(dow))) // last week's
			}
		}
		return !ref.Before(start) && !ref.After(start.Add(length))
	}
}

func TestLocksmithWeekly(t *testing.T) {
	// Flatcar reads /usr/share/flatcar/update.conf, then /etc/flatcar/update.conf.
	res, err := migrate.Locksmith(read(t, "locksmith/weekly/usr/share/flatcar/update.conf", "locksmith/weekly/etc/flatcar/update.conf"),
		migrate.Options{Timezone: "Europe/Berlin", Now: notesNow})
	if err != nil {
		t.Fatal(err)
	}
	p, cal := load(t, res)
	if p.Strategy != "window" || p.Node.Group != "web" || p.Lock.Plugin != "etcd" || p.Lock.Slots != 1 || p.Installer.Backend != "update-engine" {
		t.Fatalf("strategy %q group %q lock %q/%d installer %q", p.Strategy, p.Node.Group, p.Lock.Plugin, p.Lock.Slots, p.Installer.Backend)
	}
	wantConfig := map[string]any{
		"endpoints": []any{"https://10.0.0.11:2379", "https://10.0.0.12:2379"},
		"ca_file":   "/etc/ssl/etcd/ca.pem", "cert_file": "/etc/ssl/etcd/client.pem", "key_file": "/etc/ssl/etcd/client-key.pem",
	}
	for k, v := range wantConfig {
		if got := p.Lock.Config[k]; !equalAny(got, v) {
			t.Errorf("lock.config.%s = %v, want %v", k, got, v)
		}
	}
	// "Thu 23:00" for 1h30m, read in Europe/Berlin: Thursday 23:00 to
	// Friday 00:30, which is 22:00Z–23:30Z in winter (CET) and 21:00Z–22:30Z
	// after the clocks went forward on Sunday 2026-03-29.
	equalSpans(t, "offpeak next", nextWindows(cal, "2026-03-23T00:00:00Z", 3), []span{
		{"2026-03-26T22:00:00Z", "2026-03-26T23:30:00Z"},
		{"2026-04-02T21:00:00Z", "2026-04-02T22:30:00Z"},
		{"2026-04-09T21:00:00Z", "2026-04-09T22:30:00Z"},
	})
	allows := locksmithAllows(mustZone("Europe/Berlin"), time.Thursday, false, 23, 0, 90*time.Minute)
	// Thursday nights never meet a clock change in Berlin (Sundays): no
	// difference across both changes of 2026.
	equalDiffs(t, "spring", disagreements(cal, "locksmith", allows, "2026-03-22T00:00:00Z", "2026-04-06T00:00:00Z"), nil)
	equalDiffs(t, "autumn", disagreements(cal, "locksmith", allows, "2026-10-18T00:00:00Z", "2026-11-02T00:00:00Z"), nil)

	// Every setting names its source line.
	for _, want := range []string{
		"# from locksmith/weekly/etc/flatcar/update.conf:3: REBOOT_STRATEGY=\"etcd-lock\"",
		"# from locksmith/weekly/etc/flatcar/update.conf:10: LOCKSMITHD_GROUP=\"web\"",
		"# from locksmith/weekly/etc/flatcar/update.conf:4:",
	} {
		if !strings.Contains(string(res.Policy), want) {
			t.Errorf("policy lacks %q:\n%s", want, res.Policy)
		}
	}
	// The later file's GROUP (the update channel) wins and stays update_engine's.
	if !hasNote(res.Notes, "etc/flatcar/update.conf:2: GROUP", "update_engine") || hasNote(res.Notes, "usr/share/flatcar/update.conf:1: GROUP") {
		t.Errorf("notes: %v", res.Notes)
	}
	for _, want := range []string{"Europe/Berlin", "etcd v3", "locksmithctl unlock", "systemctl mask --now locksmithd"} {
		if !hasNote(res.Notes, want) {
			t.Errorf("no note says %q: %v", want, res.Notes)
		}
	}
}

// A daily window at 02:30 starts in the hour the clocks skip in spring,
// and, in Europe/Berlin, in the hour they repeat in autumn. locksmith takes
// Go's time.Date for it; offpeak opens right after the gap and at the first
// occurrence. The two differ by up to an hour on those days, and agree on
// every other day.
func TestLocksmithDailyAcrossClockChanges(t *testing.T) {
	tests := []struct {
		zone      string
		next      []span // offpeak next from the day before the spring change
		spring    []diff
		autumn    []diff
		springDay string
		autumnDay string
		notes     [][]string
	}{
		{
			zone: "America/New_York",
			// 2026-03-08 skips 02:00–03:00 EST→EDT. Go's time.Date(02:30)
			// looks the offset up at 02:30Z (EST), gets 07:30Z, which is
			// already EDT, and so returns 06:30Z (01:30 EST): locksmith
			// opens [06:30Z, 07:30Z]. offpeak opens at 03:00 EDT = 07:00Z
			// for 1h: [07:00Z, 08:00Z).
			next: []span{
				{"2026-03-07T07:30:00Z", "2026-03-07T08:30:00Z"},
				{"2026-03-08T07:00:00Z", "2026-03-08T08:00:00Z"},
				{"2026-03-09T06:30:00Z", "2026-03-09T07:30:00Z"},
			},
			springDay: "2026-03-06T00:00:00Z",
			spring: []diff{
				{"locksmith", "2026-03-08T06:30:00Z", "2026-03-08T07:00:00Z"},
				{"offpeak", "2026-03-08T07:30:00Z", "2026-03-08T08:00:00Z"},
			},
			// 2026-11-01 repeats 01:00–02:00; 02:30 happens once: no difference.
			autumnDay: "2026-10-30T00:00:00Z",
			autumn:    nil,
			notes:     [][]string{{"2026-03-08", "locksmith would open it at 01:30 EST, offpeak opens it at 03:00 EDT"}},
		},
		{
			zone: "Europe/Berlin",
			// 2026-03-29 skips 02:00–03:00 CET→CEST. time.Date(02:30)
			// looks up 02:30Z (CEST), gets 00:30Z, which is still CET, and
			// so returns 01:30Z (03:30 CEST): locksmith opens [01:30Z,
			// 02:30Z]. offpeak opens at 03:00 CEST = 01:00Z: [01:00Z, 02:00Z).
			next: []span{
				{"2026-03-28T01:30:00Z", "2026-03-28T02:30:00Z"},
				{"2026-03-29T01:00:00Z", "2026-03-29T02:00:00Z"},
				{"2026-03-30T00:30:00Z", "2026-03-30T01:30:00Z"},
			},
			springDay: "2026-03-27T00:00:00Z",
			spring: []diff{
				{"offpeak", "2026-03-29T01:00:00Z", "2026-03-29T01:30:00Z"},
				{"locksmith", "2026-03-29T02:00:00Z", "2026-03-29T02:30:00Z"},
			},
			// 2026-10-25 repeats 02:00–03:00 CEST→CET. time.Date(02:30)
			// looks up 02:30Z (CET), gets 01:30Z, which is CET: the second
			// occurrence, [01:30Z, 02:30Z]. offpeak opens at the first,
			// 02:30 CEST = 00:30Z: [00:30Z, 01:30Z).
			autumnDay: "2026-10-24T00:00:00Z",
			autumn: []diff{
				{"offpeak", "2026-10-25T00:30:00Z", "2026-10-25T01:30:00Z"},
				{"locksmith", "2026-10-25T01:30:00Z", "2026-10-25T02:30:00Z"},
			},
			notes: [][]string{
				{"2026-03-29", "locksmith would open it at 03:30 CEST, offpeak opens it at 03:00 CEST"},
				{"2026-10-25", "locksmith would open it at 02:30 CET, offpeak opens it at 02:30 CEST"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.zone, func(t *testing.T) {
			res, err := migrate.Locksmith(read(t, "locksmith/daily/update.conf"), migrate.Options{Timezone: tt.zone, Now: notesNow})
			if err != nil {
				t.Fatal(err)
			}
			p, cal := load(t, res)
			// REBOOT_STRATEGY=reboot with a window: only "window" honours
			// windows, with a lock that stays on this host.
			if p.Strategy != "window" || p.Lock.Plugin != "file" || len(p.Windows) != 1 || p.Windows[0].Start != "30 2 * * *" {
				t.Fatalf("strategy %q lock %q windows %+v", p.Strategy, p.Lock.Plugin, p.Windows)
			}
			equalSpans(t, "offpeak next", nextWindows(cal, tt.springDay, 4)[1:], tt.next)
			allows := locksmithAllows(mustZone(tt.zone), 0, true, 2, 30, time.Hour)
			equalDiffs(t, "spring", disagreements(cal, "locksmith", allows, tt.springDay, ts(tt.springDay).Add(96*time.Hour).Format(time.RFC3339)), tt.spring)
			equalDiffs(t, "autumn", disagreements(cal, "locksmith", allows, tt.autumnDay, ts(tt.autumnDay).Add(96*time.Hour).Format(time.RFC3339)), tt.autumn)
			for _, n := range tt.notes {
				if !hasNote(res.Notes, n...) {
					t.Errorf("no note says %q:\n%v", n, res.Notes)
				}
			}
			if len(tt.notes) < 2 && hasNote(res.Notes, "2026-11-01") {
				t.Errorf("a note for a clock change that does not matter: %v", res.Notes)
			}
		})
	}
}

func TestLocksmithNoWindow(t *testing.T) {
	res, err := migrate.Locksmith(read(t, "locksmith/coreos/update.conf"), migrate.Options{Now: notesNow})
	if err != nil {
		t.Fatal(err)
	}
	p, cal := load(t, res)
	if p.Strategy != "best-effort" || p.Lock.Plugin != "etcd" || len(p.Windows) != 0 {
		t.Fatalf("strategy %q lock %q windows %d", p.Strategy, p.Lock.Plugin, len(p.Windows))
	}
	// No window at all: locksmith reboots at any time, and offpeak next
	// lists nothing rather than the built-in nightly window.
	if ws := cal.Next(ts("2026-01-01T00:00:00Z"), 1); len(ws) != 0 {
		t.Fatalf("windows: %v", ws)
	}
	if got := p.Lock.Config["endpoints"]; !equalAny(got, []any{"http://127.0.0.1:2379", "http://127.0.0.1:4001"}) {
		t.Errorf("endpoints %v, want locksmith's defaults", got)
	}
	if p.Lock.Config["username"] != "locksmith" || p.Lock.Config["password"] != "s3cr3t pass" {
		t.Errorf("credentials: %v", p.Lock.Config)
	}
	// The password is in the policy once, as a value, never in a comment
	// or a note.
	if n := strings.Count(string(res.Policy), "s3cr3t"); n != 1 {
		t.Errorf("the password appears %d times:\n%s", n, res.Policy)
	}
	for _, n := range append(res.Notes, res.Unmapped...) {
		if strings.Contains(n.String(), "s3cr3t") {
			t.Errorf("the password in a note: %s", n)
		}
	}
	if !strings.Contains(string(res.Policy), "LOCKSMITHD_ETCD_PASSWORD=(redacted)") {
		t.Errorf("the password's source line is not named:\n%s", res.Policy)
	}
}

func TestLocksmithStrategies(t *testing.T) {
	const window = "LOCKSMITHD_REBOOT_WINDOW_START=04:00\nLOCKSMITHD_REBOOT_WINDOW_LENGTH=1h\n"
	tests := []struct {
		conf              string
		strategy, locker  string
		windows           int
		unmapped, noteHas string
	}{
		{conf: "", strategy: "reboot", windows: 0},
		{conf: "REBOOT_STRATEGY=\n", strategy: "reboot"},
		{conf: "REBOOT_STRATEGY=reboot\nLOCKSMITHD_ENDPOINT=http://etcd:2379\n", strategy: "reboot", unmapped: "LOCKSMITHD_ENDPOINT: unused"},
		{conf: "REBOOT_STRATEGY=reboot\n" + window, strategy: "window", locker: "file", windows: 1},
		{conf: "REBOOT_STRATEGY=etcd-lock\n", strategy: "etcd-lock", locker: "etcd"},
		{conf: "REBOOT_STRATEGY=etcd-lock\n" + window, strategy: "window", locker: "etcd", windows: 1},
		{conf: "REBOOT_STRATEGY=best-effort\n" + window, strategy: "window", locker: "etcd", windows: 1, noteHas: "never reboots without an etcd slot"},
		{conf: "REBOOT_STRATEGY=off\n" + window, strategy: "off", noteHas: "strategy off never reboots"},
		{conf: "REBOOT_STRATEGY=etcd-lock\nLOCKSMITHD_DEBUG=1\nFOO=bar\n", strategy: "etcd-lock", locker: "etcd", unmapped: "FOO: not a locksmith setting"},
	}
	for _, tt := range tests {
		t.Run(strings.ReplaceAll(tt.conf, "\n", ";"), func(t *testing.T) {
			res, err := migrate.Locksmith(inline("update.conf", tt.conf), migrate.Options{Now: notesNow})
			if err != nil {
				t.Fatal(err)
			}
			p, _ := load(t, res)
			if p.Strategy != tt.strategy || len(p.Windows) != tt.windows || (tt.locker != "" && p.Lock.Plugin != tt.locker) {
				t.Fatalf("strategy %q lock %q windows %d\n%s", p.Strategy, p.Lock.Plugin, len(p.Windows), res.Policy)
			}
			if tt.unmapped != "" && !hasNote(res.Unmapped, tt.unmapped) {
				t.Errorf("unmapped %v lacks %q", res.Unmapped, tt.unmapped)
			}
			if tt.noteHas != "" && !hasNote(res.Notes, tt.noteHas) {
				t.Errorf("notes %v lack %q", res.Notes, tt.noteHas)
			}
			if len(res.Unmapped) > 0 && !strings.Contains(string(res.Policy), "# Not migrated: no offpeak equivalent") {
				t.Errorf("unmapped settings not listed in the policy:\n%s", res.Policy)
			}
		})
	}
}

func TestLocksmithErrors(t *testing.T) {
	tests := []struct{ conf, want string }{
		{"REBOOT_STRATEGY=sometimes\n", `update.conf:1: REBOOT_STRATEGY: unknown strategy "sometimes"`},
		{"LOCKSMITHD_REBOOT_WINDOW_START=04:00\n", "update.conf:1: LOCKSMITHD_REBOOT_WINDOW_START: locksmith needs both"},
		{"\nREBOOT_WINDOW_LENGTH=1h\n", "update.conf:2: REBOOT_WINDOW_LENGTH: locksmith needs both"},
		{"LOCKSMITHD_REBOOT_WINDOW_START=Thursday 04:00\nLOCKSMITHD_REBOOT_WINDOW_LENGTH=1h\n", `update.conf:1: LOCKSMITHD_REBOOT_WINDOW_START: invalid day of week "Thursday"`},
		{"LOCKSMITHD_REBOOT_WINDOW_START=25:00\nLOCKSMITHD_REBOOT_WINDOW_LENGTH=1h\n", "invalid time of day"},
		{"LOCKSMITHD_REBOOT_WINDOW_START=04:00\nLOCKSMITHD_REBOOT_WINDOW_LENGTH=24h\n", "update.conf:2: LOCKSMITHD_REBOOT_WINDOW_LENGTH: 24h: a daily window must be shorter than 24h"},
		{"LOCKSMITHD_REBOOT_WINDOW_START=Mon 04:00\nLOCKSMITHD_REBOOT_WINDOW_LENGTH=soon\n", `"soon" is not a duration`},
		{"REBOOT_STRATEGY=etcd-lock\nLOCKSMITHD_ENDPOINT= , \n", "update.conf:2: LOCKSMITHD_ENDPOINT: names no endpoint"},
		{"REBOOT_STRATEGY=etcd-lock\nLOCKSMITHD_GROUP=web servers\n", `update.conf:2: LOCKSMITHD_GROUP: "web servers" is not a valid offpeak group name`},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			_, err := migrate.Locksmith(inline("update.conf", tt.conf), migrate.Options{})
			if !errors.Is(err, migrate.ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v, want %q", err, tt.want)
			}
		})
	}
	if _, err := migrate.Locksmith(nil, migrate.Options{Timezone: "Local"}); err == nil || !strings.Contains(err.Error(), "IANA") {
		t.Fatalf("--timezone Local: %v", err)
	}
}
