package semaphore_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/offpeak/offpeak/lockers/semaphore"
	"github.com/offpeak/offpeak/lockers/semaphore/storetest"
	"github.com/offpeak/offpeak/plugins"
)

// memStore is a semaphore.Store in memory: one group, a revision per
// write; the semaphore's version is the revision that last wrote it.
type memStore struct {
	mu      sync.Mutex
	rev     uint64
	version uint64
	sem     []byte
	recs    map[string][]byte
	recRev  map[string]uint64 // revision that last wrote each record
	commits int
	reads   int
	// lose makes that many guarded commits fail, as if another writer had
	// got there first.
	lose int
	// fresh: a failed commit returns the group as it is now.
	fresh bool
}

func newMemStore() *memStore {
	return &memStore{recs: map[string][]byte{}, recRev: map[string]uint64{}}
}

// frozenVersion is the freeze marker's revision, 0 when absent.
func (m *memStore) frozenVersion() uint64 {
	if _, ok := m.recs[semaphore.FrozenKey]; !ok {
		return 0
	}
	return m.recRev[semaphore.FrozenKey]
}

func (m *memStore) Read(context.Context) (semaphore.Snapshot, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.reads++
	return m.snapshot()
}

func (m *memStore) snapshot() (semaphore.Snapshot, error) {
	s := semaphore.Snapshot{Revision: m.rev}
	if m.sem != nil {
		if err := s.SetSem(m.sem, m.version); err != nil {
			return semaphore.Snapshot{}, err
		}
	}
	for k, v := range m.recs {
		if err := s.AddRecord(k, v, m.recRev[k]); err != nil {
			return semaphore.Snapshot{}, err
		}
	}
	return s, nil
}

func (m *memStore) Commit(_ context.Context, w semaphore.Write) (bool, uint64, *semaphore.Snapshot, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.commits++
	lost := w.Guarded && m.lose > 0
	if lost {
		m.lose--
	}
	if lost || (w.Guarded && (w.Version != m.version || (w.GuardFrozen && m.frozenVersion() != w.FrozenVersion))) {
		if !m.fresh {
			return false, 0, nil, nil
		}
		s, err := m.snapshot()
		return false, 0, &s, err
	}
	m.rev++
	if w.Sem != nil {
		m.sem, m.version = w.Sem, m.rev
	}
	for _, op := range w.Ops {
		if op.Delete {
			delete(m.recs, op.Key)
			delete(m.recRev, op.Key)
		} else {
			m.recs[op.Key], m.recRev[op.Key] = op.Value, m.rev
		}
	}
	return true, m.rev, nil, nil
}

func testOps(m *memStore) (*semaphore.Ops, *int) {
	opens := new(int)
	return &semaphore.Ops{
		Name: "mem",
		Log:  slog.New(slog.DiscardHandler),
		Now:  func() time.Time { return time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) },
		Open: func(ctx context.Context, _ string, f func(context.Context, semaphore.Store) error) error {
			*opens++
			return f(ctx, m)
		},
	}, opens
}

func TestMemStoreKeepsTheContract(t *testing.T) {
	storetest.Run(t, newMemStore())
	m := newMemStore()
	m.fresh = true
	storetest.Run(t, m)
}

// A store that reads the group when a guard fails spares the next round
// its Read.
func TestLostRacesReuseTheFailedWritesRead(t *testing.T) {
	m := newMemStore()
	m.fresh = true
	o, _ := testOps(m)
	m.lose = semaphore.MaxCASAttempts - 1
	res, err := o.Acquire(context.Background(), plugins.AcquireRequest{Group: "g", Slots: 1, Holder: plugins.Holder{ID: "n1"}})
	if err != nil || !res.Granted {
		t.Fatalf("Acquire = %+v, %v", res, err)
	}
	if m.reads != 1 || m.commits != semaphore.MaxCASAttempts {
		t.Fatalf("%d reads and %d commits, want 1 and %d", m.reads, m.commits, semaphore.MaxCASAttempts)
	}
}

func TestAcquireRetriesLostRaces(t *testing.T) {
	m := newMemStore()
	o, _ := testOps(m)
	ctx := context.Background()
	m.lose = semaphore.MaxCASAttempts - 1
	res, err := o.Acquire(ctx, plugins.AcquireRequest{Group: "g", Slots: 1, Holder: plugins.Holder{ID: "n1"}})
	if err != nil || !res.Granted || !res.State.Holds("n1") {
		t.Fatalf("Acquire after %d lost races = %+v, %v", semaphore.MaxCASAttempts-1, res, err)
	}
	if m.commits != semaphore.MaxCASAttempts {
		t.Fatalf("%d commits, want %d", m.commits, semaphore.MaxCASAttempts)
	}
	if res.State.Revision != m.rev {
		t.Fatalf("state revision %d, want the write's %d", res.State.Revision, m.rev)
	}

	// A holder's refresh is a guarded write too.
	m.lose, m.commits = semaphore.MaxCASAttempts, 0
	_, err = o.Acquire(ctx, plugins.AcquireRequest{Group: "g", Slots: 1, Holder: plugins.Holder{ID: "n1"}})
	if !errors.Is(err, plugins.ErrConflict) || !strings.HasPrefix(err.Error(), "mem: acquire in group \"g\"") {
		t.Fatalf("Acquire after %d lost races = %v, want ErrConflict", semaphore.MaxCASAttempts, err)
	}
	if m.commits != semaphore.MaxCASAttempts {
		t.Fatalf("%d commits, want %d", m.commits, semaphore.MaxCASAttempts)
	}
	for name, call := range map[string]func() error{
		"release": func() error { return o.Release(ctx, plugins.ReleaseRequest{Group: "g", ID: "n1"}) },
		"set slots": func() error {
			_, err := o.SetSlots(ctx, "g", 3)
			return err
		},
	} {
		m.lose = semaphore.MaxCASAttempts
		if err := call(); !errors.Is(err, plugins.ErrConflict) {
			t.Fatalf("%s after %d lost races = %v, want ErrConflict", name, semaphore.MaxCASAttempts, err)
		}
	}
}

func TestRefusalsWriteNothing(t *testing.T) {
	m := newMemStore()
	o, opens := testOps(m)
	ctx := context.Background()
	if _, err := o.Acquire(ctx, plugins.AcquireRequest{Group: "g", Slots: 1, Holder: plugins.Holder{ID: "n1"}}); err != nil {
		t.Fatal(err)
	}
	m.commits = 0
	res, err := o.Acquire(ctx, plugins.AcquireRequest{Group: "g", Slots: 1, Holder: plugins.Holder{ID: "n2"}})
	if err != nil || res.Granted || res.State.Revision != m.rev || !res.State.Holds("n1") {
		t.Fatalf("Acquire in a full group = %+v, %v", res, err)
	}
	if err := o.Release(ctx, plugins.ReleaseRequest{Group: "g", ID: "n2"}); !errors.Is(err, plugins.ErrNotHolder) {
		t.Fatalf("Release of a non-holder = %v", err)
	}
	if m.commits != 0 {
		t.Fatalf("refusals committed %d writes", m.commits)
	}
	// A bad argument never opens the store.
	*opens = 0
	if _, err := o.Acquire(ctx, plugins.AcquireRequest{Group: "g", Slots: 1, Holder: plugins.Holder{ID: "bad id"}}); !errors.Is(err, plugins.ErrInvalidArgument) {
		t.Fatalf("Acquire with a space in the id = %v", err)
	}
	if *opens != 0 {
		t.Fatalf("store opened %d times for a bad argument", *opens)
	}
}
