package scheduler_test

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/offpeak/offpeak/internal/state"
	"github.com/offpeak/offpeak/scheduler"
)

// A state file the agent cannot account for is corrupt, like a truncated
// one: read as idle, a node that was mid-reboot would take a slot again and
// forget its reboot history. Files earlier versions wrote still load.
func TestUnknownStateContentRefusesToStart(t *testing.T) {
	corrupt := []struct{ name, content, why string }{
		{"null", "null", "null"},
		{"empty object", "{}", "no phase"},
		{"unknown phase", `{"phase":"sleeping"}`, `unknown phase "sleeping"`},
		{"empty phase", `{"phase":""}`, "no phase"},
		{"unknown key", `{"phase":"idle","slot_taken_at":"2025-06-03T02:00:00Z"}`, `unknown key "slot_taken_at"`},
		{"array", `[]`, "cannot unmarshal"},
	}
	for _, tt := range corrupt {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "state.json")
			if err := state.WriteAtomic(p, []byte(tt.content), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := scheduler.New(scheduler.Options{Policy: mustPolicy(t, basePolicy), NodeID: "n", Locker: newFileLocker(t, t.TempDir()), Store: state.File{Path: p}})
			if !errors.Is(err, state.ErrCorrupt) || !strings.Contains(err.Error(), tt.why) || !strings.Contains(err.Error(), p) {
				t.Fatalf("%s: got %v; want state.ErrCorrupt naming %s and %q", tt.content, err, p, tt.why)
			}
		})
	}
	valid := []struct{ name, content, phase string }{
		{"idle", `{"phase":"idle"}`, scheduler.PhaseIdle},
		{"rebooting", `{"phase":"rebooting","group":"web","slot_acquired_at":"2025-06-03T02:10:00Z","boot_id":"b1","reboot_from_boot_id":"b1",` +
			`"reboot_requested_at":"2025-06-03T02:11:00Z","reboots":["2025-06-03T02:11:00Z"],"last":{"decision":"reboot","reason":"rebooting",` +
			`"next_window":null,"holding_slot":true,"phase":"rebooting","strategy":"window","node":"n","group":"web","time":"2025-06-03T02:11:00Z"}}`,
			scheduler.PhaseRebooting},
		{"failed", `{"phase":"failed","group":"web","failure_reason":"post-boot check 'api' failed","rolled_back":true,` +
			`"checks":{"api":{"name":"api","plugin":"exec","phase":"post-boot","outcome":"fail","reason":"exit 1","time":"2025-06-03T02:20:00Z","attempts":1}}}`,
			scheduler.PhaseFailed},
	}
	for _, tt := range valid {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "state.json")
			if err := state.WriteAtomic(p, []byte(tt.content), 0o644); err != nil {
				t.Fatal(err)
			}
			a, err := scheduler.New(scheduler.Options{Policy: mustPolicy(t, basePolicy), NodeID: "n", Locker: newFileLocker(t, t.TempDir()), Store: state.File{Path: p}})
			if err != nil {
				t.Fatal(err)
			}
			if got := a.State().Phase; got != tt.phase {
				t.Fatalf("phase %q, want %q", got, tt.phase)
			}
		})
	}
}

// Whatever a state file holds, reading it never panics, and what it accepts
// is written back as a file it accepts again.
func FuzzStateUnmarshal(f *testing.F) {
	for _, s := range []string{`null`, `{}`, `{"phase":"idle"}`, `{"phase":"holding","group":"web"}`, `{"phase":"x"}`, `[1]`, `{"phase":"idle","last":null}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var st scheduler.State
		if err := json.Unmarshal(b, &st); err != nil {
			return
		}
		out, err := json.Marshal(&st)
		if err != nil {
			t.Fatal(err)
		}
		var again scheduler.State
		if err := json.Unmarshal(out, &again); err != nil || again.Phase != st.Phase {
			t.Fatalf("%s accepted, but its encoding %s is not: %v", b, out, err)
		}
	})
}
