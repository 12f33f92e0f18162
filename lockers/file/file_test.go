package file

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/offpeak/offpeak/lockers/lockertest"
	"github.com/offpeak/offpeak/plugins"
)

func newLocker(t *testing.T, dir string) plugins.Locker {
	t.Helper()
	l := New(nil)
	cfg, _ := json.Marshal(Config{Dir: dir, PollInterval: plugins.Duration(10 * time.Millisecond)})
	if err := l.Configure(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	return l
}

func TestConformance(t *testing.T) {
	dir := t.TempDir()
	lockertest.Run(t, func(t *testing.T) plugins.Locker { return newLocker(t, dir) })
}

// TestSlotSurvivesProcess: the holder record is on disk; a new locker (a new
// process, a rebooted machine) sees it.
func TestSlotSurvivesProcess(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	r, err := newLocker(t, dir).Acquire(ctx, plugins.AcquireRequest{Group: "web", Slots: 1,
		Holder: plugins.Holder{ID: "a", Hostname: "a.example", BootID: "b1", AcquiredAt: time.Date(2025, 6, 3, 2, 0, 0, 0, time.UTC)}})
	if err != nil || !r.Granted {
		t.Fatalf("%+v %v", r, err)
	}
	st, err := newLocker(t, dir).Status(ctx, "web")
	if err != nil || len(st.Holders) != 1 || st.Holders[0].Hostname != "a.example" || st.Holders[0].BootID != "b1" {
		t.Fatalf("%+v %v", st, err)
	}
	r, err = newLocker(t, dir).Acquire(ctx, plugins.AcquireRequest{Group: "web", Holder: plugins.Holder{ID: "b"}})
	if err != nil || r.Granted {
		t.Fatalf("second holder granted: %+v %v", r, err)
	}
}

func TestDamagedFileRefused(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "web.json"), []byte(`{"total_slots": 1, "holders": [`), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := newLocker(t, dir).Acquire(context.Background(), plugins.AcquireRequest{Group: "web", Holder: plugins.Holder{ID: "a"}})
	if !errors.Is(err, plugins.ErrUnavailable) {
		t.Fatalf("got %v", err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "web.json"))
	if string(b) != `{"total_slots": 1, "holders": [` {
		t.Fatal("damaged file overwritten")
	}
}
