// Package memlocker is a plugins.Locker that keeps every group in memory:
// the semaphore engine of the etcd and Consul lockers (lockers/semaphore)
// on a store held in a map. It follows the conformance suite
// (lockers/lockertest) like every built-in locker, so it stands in for a
// real lock service in tests, examples and demos of plugins. Its state is
// gone with the process: it is not a locker for a fleet.
package memlocker

import (
	"context"
	"encoding/json"
	"log/slog"
	"sync"
	"time"

	"github.com/offpeak/offpeak/lockers/semaphore"
	"github.com/offpeak/offpeak/plugins"
)

// Locker keeps every group's semaphore in memory. Status, Acquire,
// Release, SetSlots, Freeze and Thaw are the semaphore engine's; its Now
// and Log may be replaced before the first call.
type Locker struct {
	semaphore.Ops

	mu     sync.Mutex
	groups map[string]*Store
}

var _ plugins.Locker = (*Locker)(nil)

// New returns an empty locker on the wall clock.
func New() *Locker {
	l := &Locker{groups: map[string]*Store{}}
	l.Ops = semaphore.Ops{Name: "memlocker", Log: slog.New(slog.DiscardHandler), Now: time.Now, Open: l.open}
	return l
}

// Configure accepts no settings: an empty config or an empty JSON object.
func (l *Locker) Configure(_ context.Context, config json.RawMessage) error {
	var none struct{}
	return plugins.DecodeConfig(config, &none)
}

// store returns group's store, creating it empty.
func (l *Locker) store(group string) *Store {
	l.mu.Lock()
	defer l.mu.Unlock()
	s, ok := l.groups[group]
	if !ok {
		s = NewStore()
		l.groups[group] = s
	}
	return s
}

// open implements semaphore.Ops.Open.
func (l *Locker) open(ctx context.Context, group string, f func(context.Context, semaphore.Store) error) error {
	return f(ctx, l.store(group))
}

// Wait returns the group's state once it changed after revision, or ctx's
// error when ctx ends first. Revision 0 returns the current state at once.
func (l *Locker) Wait(ctx context.Context, group string, revision uint64) (plugins.LockState, error) {
	if err := semaphore.ValidateName("group", group); err != nil {
		return plugins.LockState{}, err
	}
	s := l.store(group)
	for revision != 0 {
		rev, changed := s.watch()
		if rev != revision {
			break
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return plugins.LockState{}, ctx.Err()
		}
	}
	return l.Status(ctx, group)
}

// Store is one group's keys in memory, a semaphore.Store: a revision per
// write; the semaphore's version is the revision that last wrote it, a
// record's version the revision that last wrote that record. A guarded
// write that fails returns the group as it is, as etcd's transaction does.
type Store struct {
	mu      sync.Mutex
	rev     uint64
	version uint64
	sem     []byte
	recs    map[string][]byte
	recRev  map[string]uint64
	changed chan struct{} // closed and replaced by every write
}

var _ semaphore.Store = (*Store)(nil)

// NewStore returns an empty group.
func NewStore() *Store {
	return &Store{recs: map[string][]byte{}, recRev: map[string]uint64{}, changed: make(chan struct{})}
}

// Read implements semaphore.Store.
func (s *Store) Read(context.Context) (semaphore.Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.snapshot()
}

func (s *Store) snapshot() (semaphore.Snapshot, error) {
	snap := semaphore.Snapshot{Revision: s.rev}
	if s.sem != nil {
		if err := snap.SetSem(s.sem, s.version); err != nil {
			return semaphore.Snapshot{}, err
		}
	}
	for k, v := range s.recs {
		if err := snap.AddRecord(k, v, s.recRev[k]); err != nil {
			return semaphore.Snapshot{}, err
		}
	}
	return snap, nil
}

// frozenVersion is the freeze marker's version, 0 when absent.
func (s *Store) frozenVersion() uint64 {
	if _, ok := s.recs[semaphore.FrozenKey]; !ok {
		return 0
	}
	return s.recRev[semaphore.FrozenKey]
}

// Commit implements semaphore.Store.
func (s *Store) Commit(_ context.Context, w semaphore.Write) (bool, uint64, *semaphore.Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if w.Guarded && (w.Version != s.version || (w.GuardFrozen && s.frozenVersion() != w.FrozenVersion)) {
		fresh, err := s.snapshot()
		return false, 0, &fresh, err
	}
	s.rev++
	if w.Sem != nil {
		s.sem, s.version = w.Sem, s.rev
	}
	for _, op := range w.Ops {
		if op.Delete {
			delete(s.recs, op.Key)
			delete(s.recRev, op.Key)
		} else {
			s.recs[op.Key], s.recRev[op.Key] = op.Value, s.rev
		}
	}
	close(s.changed)
	s.changed = make(chan struct{})
	return true, s.rev, nil, nil
}

// watch returns the current revision and a channel closed by the next
// write.
func (s *Store) watch() (uint64, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rev, s.changed
}
