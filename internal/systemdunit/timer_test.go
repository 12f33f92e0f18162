package systemdunit

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/offpeak/offpeak/internal/cronspec"
	"github.com/offpeak/offpeak/internal/paths"
	"github.com/offpeak/offpeak/internal/policyload"
	"github.com/offpeak/offpeak/scheduler"
	"github.com/offpeak/offpeak/scheduler/policy"
	"github.com/offpeak/offpeak/strategies"
)

func TestOnCalendarRendering(t *testing.T) {
	tests := []struct {
		spec, zone string
		want       []string
	}{
		{"0 2 * * *", "", []string{"*-*-* 02:00:00 UTC"}},
		{"0 2 * * 1-5", "Europe/Berlin", []string{"Mon..Fri *-*-* 02:00:00 Europe/Berlin"}},
		{"30 1 * * 0,6", "America/New_York", []string{"Sat,Sun *-*-* 01:30:00 America/New_York"}},
		{"0 22 * * 5-6", "UTC", []string{"Fri,Sat *-*-* 22:00:00 UTC"}},
		{"0 3 * * 0-5", "UTC", []string{"Mon..Fri,Sun *-*-* 03:00:00 UTC"}},
		{"*/15 3 * * *", "UTC", []string{"*-*-* 03:00/15:00 UTC"}},
		{"5/20 3 * * *", "UTC", []string{"*-*-* 03:05/20:00 UTC"}},
		{"10-40/15 3 * * *", "UTC", []string{"*-*-* 03:10,25,40:00 UTC"}},
		{"0 1-4,22 * * *", "UTC", []string{"*-*-* 01..04,22:00:00 UTC"}},
		{"0 0 1 jan,jul *", "UTC", []string{"*-01,07-01 00:00:00 UTC"}},
		{"0 4 */2 * *", "UTC", []string{"*-*-01/2 04:00:00 UTC"}},
		{"@daily", "Asia/Tokyo", []string{"*-*-* 00:00:00 Asia/Tokyo"}},
		{"@weekly", "UTC", []string{"Sun *-*-* 00:00:00 UTC"}},
		{"@monthly", "UTC", []string{"*-*-01 00:00:00 UTC"}},
		{"@yearly", "UTC", []string{"*-01-01 00:00:00 UTC"}},
		{"@hourly", "Local", []string{"*-*-* *:00:00"}},
		// cron ORs a restricted day-of-month with a restricted day-of-week;
		// systemd ANDs, so the OR becomes two expressions.
		{"0 2 1,15 * 1", "UTC", []string{"Mon *-*-* 02:00:00 UTC", "*-*-01,15 02:00:00 UTC"}},
		{"0 2 1-31 * 1-5", "UTC", []string{"Mon..Fri *-*-* 02:00:00 UTC", "*-*-* 02:00:00 UTC"}},
	}
	for _, tt := range tests {
		t.Run(tt.spec+" "+tt.zone, func(t *testing.T) {
			got, err := OnCalendar(tt.spec, tt.zone)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("OnCalendar(%q, %q) = %q, want %q", tt.spec, tt.zone, got, tt.want)
			}
		})
	}
}

func TestOnCalendarRejectsBadSpecs(t *testing.T) {
	for _, spec := range []string{"@every 5m", "0 2 * *", "TZ=UTC 0 2 * * *", "61 2 * * *"} {
		t.Run(spec, func(t *testing.T) {
			if _, err := OnCalendar(spec, "UTC"); !errors.Is(err, cronspec.ErrBadSpec) {
				t.Fatalf("OnCalendar(%q) error = %v, want ErrBadSpec", spec, err)
			}
		})
	}
}

func TestRetryCalendar(t *testing.T) {
	tests := []struct {
		name       string
		spec       string
		span       time.Duration
		want       []string
		wantApprox bool
	}{
		{"same day", "0 2 * * 1-5", 150 * time.Minute, []string{"Mon..Fri *-*-* 02..04:00/5:00 UTC"}, false},
		{"hour boundary is exclusive", "0 2 * * *", time.Hour, []string{"*-*-* 02:00/5:00 UTC"}, false},
		{"past midnight shifts weekdays", "30 23 * * 1-5", 150 * time.Minute,
			[]string{"Mon..Fri *-*-* 23:00/5:00 UTC", "Tue..Sat *-*-* 00,01:00/5:00 UTC"}, false},
		{"past midnight with a day of month", "0 23 1 * *", 2 * time.Hour,
			[]string{"*-*-01 23:00/5:00 UTC", "*-*-* 00:00/5:00 UTC"}, true},
		{"a week or more", "0 0 * * 1", 8 * 24 * time.Hour, []string{"*-*-* *:00/5:00 UTC"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := parse(tt.spec)
			if err != nil {
				t.Fatal(err)
			}
			got, approx := s.retries("UTC", tt.span, 5*time.Minute)
			if !slices.Equal(got, tt.want) || approx != tt.wantApprox {
				t.Fatalf("retries = %q approx=%v, want %q approx=%v", got, approx, tt.want, tt.wantApprox)
			}
		})
	}
}

func TestTimerOptionsValidated(t *testing.T) {
	pol := loadPolicy(t, "")
	for _, every := range []time.Duration{-time.Minute, 90 * time.Second, 2 * time.Hour} {
		if _, err := Timer(pol, TimerOptions{Every: every}); err == nil {
			t.Errorf("Every=%s accepted", every)
		}
	}
}

func TestTimerWithoutWindowGate(t *testing.T) {
	pol := loadPolicy(t, "")
	pol.Strategy = strategies.EtcdLock
	got, err := Timer(pol, TimerOptions{Every: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(got, "\nOnCalendar=*-*-* *:00/10:00\n") || strings.Count(got, "OnCalendar=") != 1 {
		t.Fatalf("timer for etcd-lock:\n%s", got)
	}
}

// The shipped offpeak.timer is what the generator makes of the built-in
// default policy, so the two cannot drift apart.
func TestShippedTimerMatchesDefaultPolicy(t *testing.T) {
	want, err := Timer(loadPolicy(t, ""), TimerOptions{Every: 5 * time.Minute, RandomizedDelay: 5 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join("..", "..", "contrib", "systemd", "offpeak.timer"))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Fatalf("contrib/systemd/offpeak.timer differs from `offpeak systemd timer --policy <default>` output; regenerate it:\n%s", want)
	}
}

func loadPolicy(t *testing.T, path string) *policy.Policy {
	t.Helper()
	pol, err := policyload.Load(policyload.Options{Path: path, Layout: paths.Layout{Root: t.TempDir()}})
	if err != nil {
		t.Fatal(err)
	}
	return pol
}

func systemdAnalyze(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed (Debian: apt-get install systemd); skipping the check against systemd's calendar")
	}
	return p
}

// elapses asks systemd for the next n elapses of each expression after
// base and returns their union, sorted, in UTC.
func elapses(t *testing.T, bin string, exprs []string, base time.Time, n int) []time.Time {
	t.Helper()
	var all []time.Time
	for _, e := range exprs {
		cmd := exec.Command(bin, "calendar", "--iterations="+strconv.Itoa(n), "--base-time=@"+strconv.FormatInt(base.Unix(), 10), e)
		cmd.Env = append(os.Environ(), "TZ=UTC", "SYSTEMD_COLORS=0", "LC_ALL=C")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("systemd-analyze calendar %q: %v: %s", e, err, stderr.String())
		}
		for _, line := range strings.Split(string(out), "\n") {
			line = strings.TrimSpace(line)
			var v string
			switch {
			case strings.HasPrefix(line, "Next elapse:"):
				v = strings.TrimSpace(strings.TrimPrefix(line, "Next elapse:"))
			case strings.HasPrefix(line, "Iter. #"):
				v = strings.TrimSpace(line[strings.Index(line, ":")+1:])
			default:
				continue
			}
			at, err := time.Parse("Mon 2006-01-02 15:04:05 MST", v)
			if err != nil {
				t.Fatalf("systemd-analyze calendar %q: cannot read %q: %v\n%s", e, line, err, out)
			}
			all = append(all, at.UTC())
		}
	}
	slices.SortFunc(all, func(a, b time.Time) int { return a.Compare(b) })
	all = slices.CompactFunc(all, func(a, b time.Time) bool { return a.Equal(b) })
	if len(all) > n {
		all = all[:n]
	}
	return all
}

// starts returns offpeak's first n window starts strictly after base for
// one spec, each window alone (no merging, no blackouts).
func starts(t *testing.T, spec, zone string, base time.Time, n int) []time.Time {
	t.Helper()
	cal, err := scheduler.NewCalendar([]policy.Window{{Name: "w", Start: spec, Timezone: zone, Duration: policy.Duration(time.Second)}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var out []time.Time
	for w := range cal.Windows(base) {
		if !w.Start.After(base) {
			continue
		}
		out = append(out, w.Start.UTC())
		if len(out) == n {
			break
		}
	}
	return out
}

// The OnCalendar lines must elapse exactly when offpeak's calendar opens a
// window. The base time is a fixed June date so no DST transition falls in
// the compared span (systemd and offpeak resolve DST gaps differently).
func TestOnCalendarAgreesWithSystemd(t *testing.T) {
	bin := systemdAnalyze(t)
	base := time.Date(2026, 6, 1, 0, 0, 30, 0, time.UTC)
	type tc struct{ name, spec, zone string }
	var cases []tc
	for _, c := range []tc{
		{"", "0 2 * * *", "UTC"},
		{"", "0 2 * * 1-5", "Europe/Berlin"},
		{"", "30 1 * * 0,6", "America/New_York"},
		{"", "*/20 3 * * *", "Asia/Kolkata"},
		{"", "5/25 4 * * 2", "Australia/Sydney"},
		{"", "0 2 1,15 * 1", "UTC"},
		{"", "0 4 */2 * *", "Europe/London"},
		{"", "@weekly", "Pacific/Auckland"},
		{"", "@monthly", "UTC"},
		{"", "45 23 * 6,7 5-6", "America/Los_Angeles"},
	} {
		c.name = c.spec + " " + c.zone
		cases = append(cases, c)
	}
	examples, err := filepath.Glob(filepath.Join("..", "..", "examples", "*.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(examples) == 0 {
		t.Fatal("no example policies found")
	}
	for _, ex := range append(examples, "") {
		pol := loadPolicy(t, ex)
		for _, w := range pol.Windows {
			name := filepath.Base(ex) + "/" + w.Name
			if ex == "" {
				name = "default/" + w.Name
			}
			cases = append(cases, tc{name, w.Start, w.Timezone})
		}
	}
	const n = 12
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			exprs, err := OnCalendar(c.spec, c.zone)
			if err != nil {
				t.Fatal(err)
			}
			got := elapses(t, bin, exprs, base, n)
			want := starts(t, c.spec, c.zone, base, n)
			if !slices.EqualFunc(got, want, time.Time.Equal) {
				t.Fatalf("OnCalendar %q elapses at\n%v\noffpeak's windows start at\n%v", exprs, got, want)
			}
		})
	}
}

// Every line of a generated timer must be accepted by systemd, including
// the re-run lines.
func TestGeneratedTimersParse(t *testing.T) {
	bin := systemdAnalyze(t)
	examples, _ := filepath.Glob(filepath.Join("..", "..", "examples", "*.toml"))
	for _, ex := range append(examples, "") {
		t.Run(filepath.Base(ex), func(t *testing.T) {
			timer, err := Timer(loadPolicy(t, ex), TimerOptions{Every: 5 * time.Minute, RandomizedDelay: time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			var n int
			for _, line := range strings.Split(timer, "\n") {
				e, ok := strings.CutPrefix(line, "OnCalendar=")
				if !ok {
					continue
				}
				n++
				if out, err := exec.Command(bin, "calendar", e).CombinedOutput(); err != nil {
					t.Errorf("systemd rejects OnCalendar=%s: %v: %s", e, err, out)
				}
			}
			if n < 2 {
				t.Fatalf("expected window-start and re-run lines:\n%s", timer)
			}
		})
	}
}

// Every generated timer, as a whole, passes `systemd-analyze verify`: each
// directive known and well formed, the unit it starts present. Any line
// systemd prints about the timer is a failure, since verify reports
// unknown keys and unparsable values only as warnings.
func TestGeneratedTimersVerify(t *testing.T) {
	bin := systemdAnalyze(t)
	dir := t.TempDir()
	trueBin, err := exec.LookPath("true")
	if err != nil {
		t.Skip("no true(1) to stand in for offpeak")
	}
	service := "[Unit]\nDescription=stand-in for offpeak check\n\n[Service]\nType=oneshot\nExecStart=" + trueBin + "\n"
	if err := os.WriteFile(filepath.Join(dir, DefaultUnit), []byte(service), 0o644); err != nil {
		t.Fatal(err)
	}
	examples, err := filepath.Glob(filepath.Join("..", "..", "examples", "*.toml"))
	if err != nil || len(examples) == 0 {
		t.Fatalf("no example policies found (%v)", err)
	}
	type variant struct {
		name string
		pol  *policy.Policy
		o    TimerOptions
	}
	var variants []variant
	for _, ex := range append(examples, "") {
		base := strings.TrimSuffix(filepath.Base(ex), ".toml")
		if ex == "" {
			base = "default"
		}
		variants = append(variants,
			variant{base + "-starts", loadPolicy(t, ex), TimerOptions{}},
			variant{base + "-reruns", loadPolicy(t, ex), TimerOptions{Every: 10 * time.Minute, RandomizedDelay: 90 * time.Second}},
		)
	}
	noWindow := loadPolicy(t, "")
	noWindow.Strategy = strategies.EtcdLock
	variants = append(variants, variant{"etcd-lock", noWindow, TimerOptions{Every: 15 * time.Minute}})
	// Windows whose clock changes need dated lines in UTC.
	now := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	for _, c := range []struct{ name, spec, zone string }{
		{"berlin-daily", "0 2 * * *", "Europe/Berlin"},
		{"havana-weekdays", "0 2 * * 1-5", "America/Havana"},
		{"chatham-gap", "45 2 * * *", "Pacific/Chatham"},
		{"santiago-midnight", "0 0 * * *", "America/Santiago"},
	} {
		variants = append(variants,
			variant{c.name + "-starts", dstPolicy(t, c.spec, c.zone), TimerOptions{Now: now}},
			variant{c.name + "-reruns", dstPolicy(t, c.spec, c.zone), TimerOptions{Now: now, Every: 5 * time.Minute, RandomizedDelay: time.Minute}},
		)
	}

	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			timer, err := Timer(v.pol, v.o)
			if err != nil {
				t.Fatal(err)
			}
			name := "offpeak-" + v.name + ".timer"
			if err := os.WriteFile(filepath.Join(dir, name), []byte(timer), 0o644); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(bin, "verify", "--man=no", name)
			cmd.Dir = dir
			cmd.Env = append(os.Environ(), "SYSTEMD_LOG_COLOR=0", "LC_ALL=C")
			out, err := cmd.CombinedOutput()
			var problems []string
			for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				if strings.Contains(line, name) || strings.Contains(line, DefaultUnit) || strings.Contains(line, dir) {
					problems = append(problems, line)
				} else if line != "" {
					t.Logf("about the host: %s", line)
				}
			}
			if err != nil || len(problems) > 0 {
				t.Fatalf("systemd-analyze verify %s: %v\n%s\n%s", name, err, strings.Join(problems, "\n"), timer)
			}
		})
	}
}
