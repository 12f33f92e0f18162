package migrate_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/offpeak/offpeak/internal/migrate"
	"github.com/offpeak/offpeak/internal/policyload"
	"github.com/offpeak/offpeak/scheduler"
	"github.com/offpeak/offpeak/scheduler/policy"
)

// notesNow dates the clock-change notes: the next changes after it are
// those of 2026 the tests work through.
var notesNow = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func read(t *testing.T, files ...string) []migrate.Source {
	t.Helper()
	var srcs []migrate.Source
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join("testdata", f))
		if err != nil {
			t.Fatal(err)
		}
		srcs = append(srcs, migrate.Source{Name: f, Data: b})
	}
	return srcs
}

func inline(name, text string) []migrate.Source {
	return []migrate.Source{{Name: name, Data: []byte(text)}}
}

// load validates a migrated policy with the policy loader and compiles its
// calendar, as `offpeak next` does.
func load(t *testing.T, res *migrate.Result) (*policy.Policy, *scheduler.Calendar) {
	t.Helper()
	p, err := policyload.Parse("migrated.toml", res.Policy, policyload.Options{Now: notesNow})
	if err != nil {
		t.Fatalf("migrated policy does not validate: %v\n%s", err, res.Policy)
	}
	cal, err := scheduler.NewCalendar(p.Windows, p.Blackouts)
	if err != nil {
		t.Fatal(err)
	}
	return p, cal
}

func ts(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

// span is a half-open interval of instants, printed in UTC.
type span struct{ from, to string }

func (s span) String() string { return s.from + "→" + s.to }

// nextWindows is `offpeak next --from FROM --count N` as spans.
func nextWindows(cal *scheduler.Calendar, from string, n int) []span {
	var out []span
	for _, w := range cal.Next(ts(from), n) {
		out = append(out, span{w.Start.UTC().Format(time.RFC3339), w.End.UTC().Format(time.RFC3339)})
	}
	return out
}

func equalSpans(t *testing.T, what string, got, want []span) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("%s:\n got  %v\n want %v", what, got, want)
	}
}

// diff is a stretch where offpeak and the source tool disagree: "offpeak"
// means only offpeak allows a reboot there, the tool's name that only the
// tool does.
type diff struct {
	only     string
	from, to string
}

func (d diff) String() string { return d.only + " " + d.from + "→" + d.to }

// disagreements samples every minute of [from, to) at its 30th second —
// clear of the edge seconds, which the tests pin separately — and returns
// the stretches where the windows `offpeak next` lists and the source
// tool's model disagree about whether a reboot may begin.
func disagreements(cal *scheduler.Calendar, tool string, allows func(time.Time) bool, from, to string) []diff {
	var ws []scheduler.Window
	for w := range cal.Windows(ts(from)) {
		if !w.Start.Before(ts(to)) {
			break
		}
		ws = append(ws, w)
	}
	var out []diff
	for m := ts(from); m.Before(ts(to)); m = m.Add(time.Minute) {
		at := m.Add(30 * time.Second)
		ours := false
		for _, w := range ws {
			ours = ours || w.Contains(at)
		}
		theirs := allows(at)
		if ours == theirs {
			continue
		}
		only := tool
		if ours {
			only = "offpeak"
		}
		start, end := m.UTC().Format(time.RFC3339), m.Add(time.Minute).UTC().Format(time.RFC3339)
		if n := len(out); n > 0 && out[n-1].only == only && out[n-1].to == start {
			out[n-1].to = end
			continue
		}
		out = append(out, diff{only, start, end})
	}
	return out
}

func equalDiffs(t *testing.T, what string, got, want []diff) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("%s: where offpeak and the source disagree:\n got  %v\n want %v", what, got, want)
	}
}

func mustZone(name string) *time.Location {
	loc, err := time.LoadLocation(name)
	if err != nil {
		panic(err)
	}
	return loc
}

func hasNote(notes []migrate.Note, parts ...string) bool {
	for _, n := range notes {
		s := n.String()
		ok := true
		for _, p := range parts {
			if !strings.Contains(s, p) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

func equalAny(a, b any) bool { return fmt.Sprint(a) == fmt.Sprint(b) }
