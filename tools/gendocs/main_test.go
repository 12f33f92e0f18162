package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestManPages(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "man1")
	t.Setenv("SOURCE_DATE_EPOCH", "1767225600") // 2026-01-01: pages are reproducible
	if err := run([]string{"man", dir}, io.Discard); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		page string
		want string
	}{
		{"offpeak.1", `.TH "OFFPEAK" "1" "Jan 2026" "offpeak"`},
		{"offpeak-next.1", "offpeak-next"},
		{"offpeak-agent.1", "--metrics-listen"},
		{"offpeak-check.1", "offpeak-check"},
		{"offpeak-systemd-timer.1", "--randomized-delay"},
		{"offpeak-systemd-post-boot-gate.1", "post-boot"},
		{"offpeak-completion-bash.1", "bash"},
		{"offpeak-version.1", "plugin protocol"},
		{"offpeak-migrate.1", "--timezone"},
		// The full simulate command, not the stub that runs offpeak-simulate.
		{"offpeak-simulate.1", "--faults"},
	}
	for _, tt := range tests {
		t.Run(tt.page, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(dir, tt.page))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(b), tt.want) {
				t.Fatalf("%s lacks %q", tt.page, tt.want)
			}
		})
	}
	// Hidden commands get no page.
	for _, hidden := range []string{"offpeak-plugin.1", "offpeak-plugin-serve.1"} {
		if _, err := os.Stat(filepath.Join(dir, hidden)); err == nil {
			t.Errorf("page for hidden command: %s", hidden)
		}
	}
}

func TestMarkdown(t *testing.T) {
	dir := t.TempDir()
	if err := run([]string{"markdown", dir}, io.Discard); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "offpeak_systemd_timer.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "## offpeak systemd timer") {
		t.Fatalf("markdown page:\n%s", b)
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{nil, {"man"}, {"html", "dir"}} {
		if err := run(args, io.Discard); err == nil || !strings.Contains(err.Error(), "usage: gendocs man|markdown DIR") {
			t.Errorf("run(%q) = %v", args, err)
		}
	}
}
