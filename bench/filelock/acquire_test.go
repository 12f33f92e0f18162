// Package filelock measures the file locker under contention (#18): many
// clients taking and giving back slots of one group file at once. It only
// uses the locker's public API, so the same benchmark measures any rewrite.
package filelock

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/offpeak/offpeak/lockers/file"
	"github.com/offpeak/offpeak/plugins"
)

const group = "bench"

// round runs clients goroutines, each making calls Acquire calls on one
// group of slots slots and releasing every slot it is granted at once, and
// returns the latency of every Acquire and Release call. Each call opens
// the group's lock file itself, so the goroutines contend for the flock as
// separate processes would.
func round(ctx context.Context, tb testing.TB, dir string, clients, calls, slots int) (acq, rel []time.Duration, grants int) {
	l := file.New(nil)
	cfg, _ := json.Marshal(map[string]string{"dir": dir})
	if err := l.Configure(ctx, cfg); err != nil {
		tb.Fatal(err)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := range clients {
		id := fmt.Sprintf("node-%02d", i)
		wg.Go(func() {
			var a, r []time.Duration
			n := 0
			defer func() {
				mu.Lock()
				acq, rel, grants = append(acq, a...), append(rel, r...), grants+n
				mu.Unlock()
			}()
			for range calls {
				start := time.Now()
				res, err := l.Acquire(ctx, plugins.AcquireRequest{Group: group, Holder: plugins.Holder{ID: id}, Slots: slots})
				a = append(a, time.Since(start))
				if err != nil {
					errs <- fmt.Errorf("%s: acquire: %w", id, err)
					return
				}
				if !res.Granted {
					continue
				}
				n++
				start = time.Now()
				err = l.Release(ctx, plugins.ReleaseRequest{Group: group, ID: id, Reason: "bench"})
				r = append(r, time.Since(start))
				if err != nil {
					errs <- fmt.Errorf("%s: release: %w", id, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		tb.Error(err)
	}
	st, err := l.Status(ctx, group)
	if err != nil {
		tb.Fatal(err)
	}
	if len(st.Holders) != 0 {
		tb.Errorf("holders left after every client released: %v", st.Holders)
	}
	return acq, rel, grants
}

func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(p*float64(len(s))+0.999999) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func msOf(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// BenchmarkAcquire50: 50 clients, 10 slots, 20 Acquire calls each per
// iteration. Reports Acquire's p50 and p99 (the target is p99 ≤ 3 × p50)
// and Release's.
func BenchmarkAcquire50(b *testing.B) {
	ctx := context.Background()
	var acq, rel []time.Duration
	grants := 0
	for b.Loop() {
		a, r, g := round(ctx, b, b.TempDir(), 50, 20, 10)
		acq, rel, grants = append(acq, a...), append(rel, r...), grants+g
	}
	p50, p99 := percentile(acq, .50), percentile(acq, .99)
	b.ReportMetric(msOf(p50), "acquire-p50-ms")
	b.ReportMetric(msOf(p99), "acquire-p99-ms")
	b.ReportMetric(float64(p99)/float64(max(p50, 1)), "p99/p50")
	b.ReportMetric(msOf(percentile(rel, .50)), "release-p50-ms")
	b.ReportMetric(msOf(percentile(rel, .99)), "release-p99-ms")
	b.ReportMetric(float64(grants)/float64(len(acq)), "granted/acquire")
}

// The benchmark's workload runs in the ordinary test suite too, small, so
// it keeps working: every client finishes, every grant is given back.
func TestAcquireRound(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute) // hang guard
	defer cancel()
	acq, rel, grants := round(ctx, t, t.TempDir(), 8, 5, 2)
	if len(acq) != 8*5 {
		t.Errorf("%d Acquire calls, want 40", len(acq))
	}
	if grants == 0 || len(rel) != grants {
		t.Errorf("%d grants, %d releases: want at least one grant, each released", grants, len(rel))
	}
}
