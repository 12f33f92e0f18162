package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSimulateCommand(t *testing.T) {
	svg := filepath.Join(t.TempDir(), "timeline.svg")
	out, errOut, code := run(t, &App{Now: time.Now}, "simulate", "--policy", "../../examples/weeknights.toml",
		"--nodes", "12", "--slots", "2", "--locker", "file", "--compare", "fleetlock-poll", "--output", "json", "--svg", svg)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var got struct {
		Offpeak, Baseline struct {
			Mode       string  `json:"mode"`
			Ratio      float64 `json:"ratio"`
			Violations int     `json:"violations"`
			Complete   bool    `json:"complete"`
		}
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("output is not one JSON object: %v\n%s", err, out)
	}
	if got.Offpeak.Mode != "offpeak" || got.Baseline.Mode != "fleetlock-poll" || !got.Offpeak.Complete || !got.Baseline.Complete {
		t.Fatalf("unexpected comparison: %+v", got)
	}
	if b, err := os.ReadFile(svg); err != nil || !strings.HasPrefix(string(b), "<svg") {
		t.Fatalf("svg not written: %v", err)
	}
}

func TestSimulateFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"bad faults", []string{"--faults", "kill=3"}, "--faults"},
		{"bad baseline", []string{"--baseline", "poll"}, "--baseline must be fleetlock-poll"},
		{"baseline and compare", []string{"--baseline", "fleetlock-poll", "--compare", "fleetlock-poll"}, "exclude each other"},
		{"bad from", []string{"--from", "tomorrow"}, "--from"},
		{"bad locker", []string{"--locker", "consul"}, "--locker must be file or etcd"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"simulate", "--policy", "../../examples/weeknights.toml", "--nodes", "2"}, tc.args...)
			_, errOut, code := run(t, &App{Now: time.Now}, args...)
			if code != 2 || !strings.Contains(errOut, tc.want) {
				t.Fatalf("exit %d, stderr %q; want 2 and %q", code, errOut, tc.want)
			}
		})
	}
}
