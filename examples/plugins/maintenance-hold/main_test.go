package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/offpeak/offpeak/plugins"
)

func TestHold(t *testing.T) {
	dir := t.TempDir()
	h := &hold{log: slog.New(slog.NewTextHandler(io.Discard, nil)), now: time.Now}
	for _, tc := range []struct {
		name    string
		content *string
		want    plugins.Outcome
		reason  string
	}{
		{"no file", nil, plugins.Pass, "no maintenance hold"},
		{"empty file", ptr(""), plugins.Fail, "exists"},
		{"file with a note", ptr("alice: disk errors\nmore"), plugins.Fail, "maintenance hold: alice: disk errors"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-"))
			if tc.content != nil {
				if err := os.WriteFile(path, []byte(*tc.content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			res, err := h.Check(context.Background(), plugins.CheckRequest{Phase: plugins.PhasePreReboot, Config: []byte(`{"path":"` + path + `"}`)})
			if err != nil {
				t.Fatal(err)
			}
			if res.Outcome != tc.want || !strings.Contains(res.Reason, tc.reason) {
				t.Fatalf("got %s %q, want %s with %q", res.Outcome, res.Reason, tc.want, tc.reason)
			}
		})
	}
	_, err := h.Check(context.Background(), plugins.CheckRequest{Config: []byte(`{"pth":"x"}`)})
	if !errors.Is(err, plugins.ErrInvalidArgument) {
		t.Fatalf("unknown key: %v", err)
	}
}

func ptr(s string) *string { return &s }

// TestHoldOverTheWire asks the check as offpeak does, over the plugin
// protocol: the verdict and the reason come back as the plugin gave them,
// and a bad setting comes back as ErrInvalidArgument.
func TestHoldOverTheWire(t *testing.T) {
	w := plugins.RoundTrip(t, plugins.ServeOpts{Name: "maintenance-hold", Version: version,
		HealthCheck: &hold{log: slog.New(slog.DiscardHandler), now: time.Now}})
	if w.Locker != nil {
		t.Fatal("a locker dispensed for a check plugin")
	}
	path := filepath.Join(t.TempDir(), "hold")
	if err := os.WriteFile(path, []byte("bob: kernel bisect\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := w.HealthCheck.Check(context.Background(), plugins.CheckRequest{Name: "hold", Phase: plugins.PhasePreReboot, Config: []byte(`{"path":"` + path + `"}`)})
	if err != nil || res.Outcome != plugins.Fail || res.Reason != "maintenance hold: bob: kernel bisect" {
		t.Fatalf("got %+v, %v", res, err)
	}
	_, err = w.HealthCheck.Check(context.Background(), plugins.CheckRequest{Name: "hold", Phase: plugins.PhasePreReboot, Config: []byte(`{"pth":"x"}`)})
	if !errors.Is(err, plugins.ErrInvalidArgument) {
		t.Fatalf("unknown key: %v", err)
	}
}
