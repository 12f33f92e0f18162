package logging

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/coreos/go-systemd/v22/journal"
)

func devIno(t *testing.T, f *os.File) string {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

func tempFile(t *testing.T, name string) *os.File {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestIsJournalStream(t *testing.T) {
	stream := tempFile(t, "stream")
	other := tempFile(t, "other")
	tests := []struct {
		name string
		env  string
		w    any
		want bool
	}{
		{"unset", "", stream, false},
		{"matches the writer", devIno(t, stream), stream, true},
		{"inherited but redirected elsewhere", devIno(t, other), stream, false},
		{"not a file", devIno(t, stream), &bytes.Buffer{}, false},
		{"malformed", "journal", stream, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("JOURNAL_STREAM", tt.env)
			w := tt.w.(interface{ Write([]byte) (int, error) })
			if got := IsJournalStream(w); got != tt.want {
				t.Fatalf("IsJournalStream = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestNewWritesTextOutsideTheJournal(t *testing.T) {
	t.Setenv("JOURNAL_STREAM", "")
	var buf bytes.Buffer
	log := New(&buf, "warn")
	log.Info("hidden")
	log.Warn("shown", "decision", "wait-slot")
	out := buf.String()
	if strings.Contains(out, "hidden") || !strings.Contains(out, "level=WARN msg=shown decision=wait-slot") {
		t.Fatalf("text output: %q", out)
	}
}

type entry struct {
	msg    string
	pri    journal.Priority
	fields map[string]string
}

func recorder(entries *[]entry, err error) SendFunc {
	return func(msg string, pri journal.Priority, fields map[string]string) error {
		*entries = append(*entries, entry{msg, pri, fields})
		return err
	}
}

func TestJournalFields(t *testing.T) {
	var got []entry
	log := slog.New(NewJournalHandler(recorder(&got, nil), nil, &slog.HandlerOptions{Level: slog.LevelDebug}))
	log.With("node", "node-a").Info("decision", "decision", "wait-slot", "phase", "acquiring", "group", "web",
		"reason", "1/1 slots held", "next-window", "2026-06-02T02:00:00Z", "err", errors.New("etcd: unavailable"))
	log.WithGroup("lock").Warn("slow", "group", "db", "took", "2s")
	log.Debug("d")
	log.Error("e", slog.Group("check", "name", "api"))

	if len(got) != 4 {
		t.Fatalf("%d entries, want 4", len(got))
	}
	wantFields := map[string]string{
		"SYSLOG_IDENTIFIER":   "offpeak",
		"OFFPEAK_NODE":        "node-a",
		"OFFPEAK_DECISION":    "wait-slot",
		"OFFPEAK_PHASE":       "acquiring",
		"OFFPEAK_GROUP":       "web",
		"OFFPEAK_REASON":      "1/1 slots held",
		"OFFPEAK_NEXT_WINDOW": "2026-06-02T02:00:00Z",
		"OFFPEAK_ERR":         "etcd: unavailable",
	}
	e := got[0]
	for k, v := range wantFields {
		if e.fields[k] != v {
			t.Errorf("field %s = %q, want %q", k, e.fields[k], v)
		}
	}
	if len(e.fields) != len(wantFields) {
		t.Errorf("fields %v, want exactly %v", e.fields, wantFields)
	}
	if want := `decision node=node-a decision=wait-slot phase=acquiring group=web reason="1/1 slots held" next-window=2026-06-02T02:00:00Z err="etcd: unavailable"`; e.msg != want {
		t.Errorf("MESSAGE %q, want %q", e.msg, want)
	}
	if e.pri != journal.PriInfo {
		t.Errorf("PRIORITY %d, want %d (info)", e.pri, journal.PriInfo)
	}
	// Inside a group the key is qualified, so it is not the node's group.
	if g := got[1]; g.fields["OFFPEAK_LOCK_GROUP"] != "db" || g.fields["OFFPEAK_GROUP"] != "" || g.pri != journal.PriWarning {
		t.Errorf("grouped entry: %+v", g)
	}
	if d := got[2]; d.pri != journal.PriDebug {
		t.Errorf("debug priority %d", d.pri)
	}
	if e := got[3]; e.pri != journal.PriErr || e.fields["OFFPEAK_CHECK_NAME"] != "api" {
		t.Errorf("error entry: %+v", e)
	}
}

func TestJournalLevelFilter(t *testing.T) {
	var got []entry
	log := slog.New(NewJournalHandler(recorder(&got, nil), nil, &slog.HandlerOptions{Level: ParseLevel("warn")}))
	log.Info("dropped")
	log.Warn("kept")
	if len(got) != 1 || got[0].msg != "kept" {
		t.Fatalf("entries %+v, want only the warning", got)
	}
}

// If the journal socket goes away the entry still reaches stderr.
func TestJournalFallsBackToText(t *testing.T) {
	var got []entry
	var buf bytes.Buffer
	log := slog.New(NewJournalHandler(recorder(&got, errors.New("connection refused")), &buf, nil)).With("node", "n1")
	log.Info("decision", "decision", "idle")
	if !strings.Contains(buf.String(), "msg=decision node=n1 decision=idle") {
		t.Fatalf("fallback text %q", buf.String())
	}
}

func TestFieldName(t *testing.T) {
	tests := map[string]string{
		"phase":                 "OFFPEAK_PHASE",
		"decision":              "OFFPEAK_DECISION",
		"dry_run":               "OFFPEAK_DRY_RUN",
		"asked-at":              "OFFPEAK_ASKED_AT",
		"check.name":            "OFFPEAK_CHECK_NAME",
		"ünïcode":               "OFFPEAK__N_CODE",
		strings.Repeat("x", 80): "OFFPEAK_" + strings.Repeat("X", 56),
	}
	for key, want := range tests {
		t.Run(key, func(t *testing.T) {
			if got := FieldName(key); got != want {
				t.Fatalf("FieldName(%q) = %q, want %q", key, got, want)
			}
		})
	}
}
