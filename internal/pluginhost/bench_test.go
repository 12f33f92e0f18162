package pluginhost

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/offpeak/offpeak/lockers/memlocker"
	"github.com/offpeak/offpeak/plugins"
)

// BenchmarkLockerStatus compares a Locker.Status round trip through a plugin
// process (gRPC over a local socket with mTLS) with the same in-memory
// locker called in-process.
func BenchmarkLockerStatus(b *testing.B) {
	ctx := context.Background()
	seed := func(b *testing.B, l plugins.Locker) {
		b.Helper()
		for _, id := range []string{"node-1", "node-2"} {
			res, err := l.Acquire(ctx, plugins.AcquireRequest{Group: "web", Slots: 3, Holder: plugins.Holder{ID: id, Hostname: id + ".example", Meta: map[string]string{"version": "4152.2.0"}}})
			if err != nil || !res.Granted {
				b.Fatalf("seed: %+v, %v", res, err)
			}
		}
	}
	run := func(b *testing.B, l plugins.Locker) {
		seed(b, l)
		b.ReportAllocs()
		for b.Loop() {
			st, err := l.Status(ctx, "web")
			if err != nil || len(st.Holders) != 2 {
				b.Fatalf("Status: %+v, %v", st, err)
			}
		}
	}
	b.Run("direct", func(b *testing.B) {
		run(b, memlocker.New())
	})
	b.Run("plugin", func(b *testing.B) {
		dir := b.TempDir()
		if err := os.Symlink(testPlugin, filepath.Join(dir, BinaryPrefix+"mem")); err != nil {
			b.Fatal(err)
		}
		m := New(Options{Dirs: []string{dir}})
		defer m.Close()
		l, err := m.Locker("mem", nil)
		if err != nil {
			b.Fatal(err)
		}
		run(b, l)
	})
}
