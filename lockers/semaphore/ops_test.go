package semaphore_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/offpeak/offpeak/lockers/memlocker"
	"github.com/offpeak/offpeak/lockers/semaphore"
	"github.com/offpeak/offpeak/lockers/semaphore/storetest"
	"github.com/offpeak/offpeak/plugins"
)

// memStore is memlocker's store with a count of reads and commits, and
// lost races on demand.
type memStore struct {
	*memlocker.Store
	commits int
	reads   int
	// lose makes that many guarded commits fail, as if another writer had
	// got there first.
	lose int
	// fresh: a failed commit returns the group as it is now.
	fresh bool
}

func newMemStore() *memStore { return &memStore{Store: memlocker.NewStore()} }

func (m *memStore) Read(ctx context.Context) (semaphore.Snapshot, error) {
	m.reads++
	return m.Store.Read(ctx)
}

func (m *memStore) Commit(ctx context.Context, w semaphore.Write) (bool, uint64, *semaphore.Snapshot, error) {
	m.commits++
	var (
		ok    bool
		rev   uint64
		fresh *semaphore.Snapshot
		err   error
	)
	if w.Guarded && m.lose > 0 {
		m.lose--
		var s semaphore.Snapshot
		s, err = m.Store.Read(ctx)
		fresh = &s
	} else {
		ok, rev, fresh, err = m.Store.Commit(ctx, w)
	}
	if !m.fresh {
		fresh = nil
	}
	return ok, rev, fresh, err
}

// rev is the store's revision, read without counting.
func (m *memStore) rev(t *testing.T) uint64 {
	s, err := m.Store.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return s.Revision
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
	if res.State.Revision != m.rev(t) {
		t.Fatalf("state revision %d, want the write's %d", res.State.Revision, m.rev(t))
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
	if err != nil || res.Granted || res.State.Revision != m.rev(t) || !res.State.Holds("n1") {
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
