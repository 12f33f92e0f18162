package semaphore

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/offpeak/offpeak/plugins"
)

// MaxCASAttempts bounds the read-modify-write rounds of one call. A lost
// race means another writer made progress, so a few rounds are enough.
const MaxCASAttempts = 16

// Op puts or deletes one of offpeak's records; Key is relative to the
// group's prefix (HolderKey, EventKey, FrozenKey).
type Op struct {
	Key    string
	Value  []byte
	Delete bool
}

// Write is one atomic change of a group.
type Write struct {
	// Guarded: the write applies only while the semaphore key is still at
	// Version (0: still absent) and, with GuardFrozen, the freeze marker is
	// still at FrozenVersion (0: still absent). An unguarded write always
	// applies.
	Guarded       bool
	Version       uint64
	GuardFrozen   bool
	FrozenVersion uint64
	// Sem is the new semaphore value; nil leaves it as it is.
	Sem []byte
	Ops []Op
}

// Store is one group of a key-value backend.
type Store interface {
	// Read returns one consistent snapshot of the group with Version and
	// Revision set. A record that does not decode is an error naming its key.
	Read(ctx context.Context) (Snapshot, error)
	// Commit applies w in one transaction. ok false means a guard failed:
	// another writer got there first; a store that can read in the same
	// transaction then returns the group as it is now in fresh (nil
	// otherwise), which saves the next round its Read. revision is the store
	// revision the write landed at.
	Commit(ctx context.Context, w Write) (ok bool, revision uint64, fresh *Snapshot, err error)
}

// Ops implements the plugins.Locker calls the etcd and Consul lockers share,
// on top of their Store.
type Ops struct {
	Name string // "etcd", "consul": starts error messages
	Log  *slog.Logger
	Now  func() time.Time
	// Open runs f with the store of group, within the backend's request
	// timeout. Arguments are checked before Open is called, so a bad name
	// costs no request.
	Open func(ctx context.Context, group string, f func(ctx context.Context, s Store) error) error
}

// cas runs read-plan-commit rounds until a commit lands or plan has nothing
// to write; a round after a lost race plans from the snapshot the failed
// commit returned, when the store gives one. It reports whether a write
// landed, and at which revision.
func (o *Ops) cas(ctx context.Context, s Store, op, group string, plan func(Snapshot) (*Write, error)) (bool, uint64, error) {
	var fresh *Snapshot
	for range MaxCASAttempts {
		if fresh == nil {
			snap, err := s.Read(ctx)
			if err != nil {
				return false, 0, err
			}
			fresh = &snap
		}
		w, err := plan(*fresh)
		if err != nil || w == nil {
			return false, 0, err
		}
		ok, rev, next, err := s.Commit(ctx, *w)
		if err != nil {
			return false, 0, err
		}
		if ok {
			return true, rev, nil
		}
		fresh = next
	}
	return false, 0, fmt.Errorf("%s: %s in group %q: %w", o.Name, op, group, plugins.ErrConflict)
}

// write turns the plan into the records to store, guarded by the version
// of the semaphore it was planned from.
func (p Plan) write(version uint64, by string, now time.Time) (Write, error) {
	w := Write{Guarded: true, Version: version, GuardFrozen: p.CheckNotFrozen}
	if p.Sem != nil {
		b, err := p.Sem.Marshal()
		if err != nil {
			return Write{}, err
		}
		w.Sem = b
	}
	if p.Granted {
		b, err := json.Marshal(p.Holder)
		if err != nil {
			return Write{}, err
		}
		w.Ops = append(w.Ops, Op{Key: HolderKey(p.Holder.ID), Value: b})
	}
	for _, r := range p.Reclaimed {
		ev, err := json.Marshal(Event{Time: now, Kind: "reclaim", Reason: staleReason(r, now), By: by, Holder: r})
		if err != nil {
			return Write{}, err
		}
		if !p.Granted || r.ID != p.Holder.ID {
			// A stale record under the requester's own id is overwritten
			// by the put above; one transaction may name a key once.
			w.Ops = append(w.Ops, Op{Key: HolderKey(r.ID), Delete: true})
		}
		w.Ops = append(w.Ops, Op{Key: EventKey(now, r.ID), Value: ev})
	}
	return w, nil
}

// Status returns the group's state. A group never written has zero slots.
func (o *Ops) Status(ctx context.Context, group string) (plugins.LockState, error) {
	if err := ValidateName("group", group); err != nil {
		return plugins.LockState{}, err
	}
	var st plugins.LockState
	err := o.Open(ctx, group, func(ctx context.Context, s Store) error {
		snap, err := s.Read(ctx)
		st = snap.State(group)
		return err
	})
	if err != nil {
		return plugins.LockState{}, err
	}
	return st, nil
}

// Acquire takes a slot with one guarded write that also stores the
// holder's metadata, deletes reclaimed holders with an event for each, and
// checks that the group was not frozen meanwhile.
func (o *Ops) Acquire(ctx context.Context, req plugins.AcquireRequest) (plugins.AcquireResult, error) {
	if err := plugins.ValidateAcquire(req); err != nil {
		return plugins.AcquireResult{}, err
	}
	now := req.Now
	if now.IsZero() {
		now = o.Now()
	}
	var (
		snap  Snapshot // the snapshot of the last round
		p     Plan     // and what it decided
		wrote bool
		rev   uint64
	)
	err := o.Open(ctx, req.Group, func(ctx context.Context, s Store) error {
		var err error
		wrote, rev, err = o.cas(ctx, s, "acquire", req.Group, func(cur Snapshot) (*Write, error) {
			var err error
			snap = cur
			if p, err = Decide(cur, req, now); err != nil || !p.Writes() {
				return nil, err
			}
			w, err := p.write(cur.Version, req.Holder.ID, now)
			return &w, err
		})
		return err
	})
	if err != nil {
		return plugins.AcquireResult{}, err
	}
	if !wrote {
		// Refused: full, or frozen (State.Frozen tells which).
		return plugins.AcquireResult{State: snap.State(req.Group)}, nil
	}
	for _, r := range p.Reclaimed {
		o.Log.Warn("reclaimed stale reboot slot", "group", req.Group, "holder", r.ID, "deadline", r.Deadline, "by", req.Holder.ID)
	}
	return plugins.AcquireResult{Granted: p.Granted, State: p.Apply(snap, rev).State(req.Group), Reclaimed: p.Reclaimed}, nil
}

// Release removes req.ID from the semaphore and deletes its metadata.
func (o *Ops) Release(ctx context.Context, req plugins.ReleaseRequest) error {
	if err := ValidateName("group", req.Group); err != nil {
		return err
	}
	if err := ValidateName("holder id", req.ID); err != nil {
		return err
	}
	err := o.Open(ctx, req.Group, func(ctx context.Context, s Store) error {
		_, _, err := o.cas(ctx, s, "release", req.Group, func(cur Snapshot) (*Write, error) {
			if cur.Sem == nil || !cur.Sem.Has(req.ID) {
				return nil, fmt.Errorf("%q in group %q: %w", req.ID, req.Group, plugins.ErrNotHolder)
			}
			sem := cur.Sem.Clone()
			sem.Remove(req.ID)
			return semWrite(cur, sem, Op{Key: HolderKey(req.ID), Delete: true})
		})
		return err
	})
	if err != nil {
		return err
	}
	o.Log.Info("released reboot slot", "group", req.Group, "holder", req.ID, "reason", req.Reason)
	return nil
}

// SetSlots sets the group's slot count, creating the semaphore if needed.
// Holders are never removed. While the group is frozen the live
// total_slots stays 0 and the count the thaw restores changes instead.
func (o *Ops) SetSlots(ctx context.Context, group string, slots int) (plugins.LockState, error) {
	if err := ValidateName("group", group); err != nil {
		return plugins.LockState{}, err
	}
	if slots < 0 {
		return plugins.LockState{}, fmt.Errorf("%w: slot count %d is negative", plugins.ErrInvalidArgument, slots)
	}
	n := uint64(slots)
	var next Snapshot
	err := o.Open(ctx, group, func(ctx context.Context, s Store) error {
		_, rev, err := o.cas(ctx, s, "set slots", group, func(cur Snapshot) (*Write, error) {
			next = cur
			if cur.Frozen != nil {
				f := *cur.Frozen
				f.SavedSlots = &n
				next.Frozen = &f
				return frozenWrite(cur, &f)
			}
			sem := New(n)
			if cur.Sem != nil {
				sem = cur.Sem.Clone()
				sem.TotalSlots = n
			}
			next.Sem = sem
			return semWrite(cur, sem)
		})
		next.Revision = rev
		return err
	})
	if err != nil {
		return plugins.LockState{}, err
	}
	return next.State(group), nil
}

// semWrite replaces the semaphore read in cur with sem, plus ops.
func semWrite(cur Snapshot, sem *Value, ops ...Op) (*Write, error) {
	b, err := sem.Marshal()
	if err != nil {
		return nil, err
	}
	return &Write{Guarded: true, Version: cur.Version, Sem: b, Ops: ops}, nil
}

// frozenWrite stores the freeze marker f and sets total_slots to 0 (creating
// the semaphore with no holders if it is absent, so that airlock, which
// creates a missing semaphore with its own count, grants nobody either),
// guarded on both records as read in cur.
func frozenWrite(cur Snapshot, f *Frozen) (*Write, error) {
	b, err := json.Marshal(f)
	if err != nil {
		return nil, err
	}
	w := &Write{Guarded: true, Version: cur.Version, GuardFrozen: true, FrozenVersion: cur.FrozenVersion,
		Ops: []Op{{Key: FrozenKey, Value: b}}}
	if cur.Sem == nil || cur.Sem.TotalSlots != 0 {
		sem := New(0)
		if cur.Sem != nil {
			sem = cur.Sem.Clone()
			sem.TotalSlots = 0
		}
		if w.Sem, err = sem.Marshal(); err != nil {
			return nil, err
		}
	}
	return w, nil
}

// Freeze stops new grants in the group, for offpeak and airlock alike: in
// one transaction it writes the freeze marker, with the slot count to
// restore, and sets the semaphore's total_slots to 0. Holders keep their
// slots. Freezing a frozen group updates the reason and keeps the saved
// count. Acquire guards its writes with the marker's absence, so a freeze
// and a concurrent acquire cannot both win.
func (o *Ops) Freeze(ctx context.Context, req plugins.FreezeRequest) error {
	if err := ValidateName("group", req.Group); err != nil {
		return err
	}
	at := req.At
	if at.IsZero() {
		at = o.Now()
	}
	err := o.Open(ctx, req.Group, func(ctx context.Context, s Store) error {
		_, _, err := o.cas(ctx, s, "freeze", req.Group, func(cur Snapshot) (*Write, error) {
			f := &Frozen{Reason: req.Reason, By: req.By, At: at.UTC()}
			switch {
			case cur.Frozen != nil && cur.Frozen.SavedSlots != nil:
				f.SavedSlots = cur.Frozen.SavedSlots
			case cur.Sem != nil && cur.Sem.TotalSlots > 0:
				n := cur.Sem.TotalSlots
				f.SavedSlots = &n
			default:
				// No count to save: the group has no semaphore yet (or 0
				// slots). The thaw gives it the count the freezer names.
				n := uint64(max(req.Slots, 1))
				if cur.Sem != nil {
					n = 0
				}
				f.SavedSlots = &n
			}
			return frozenWrite(cur, f)
		})
		return err
	})
	if err != nil {
		return err
	}
	o.Log.Warn("group frozen", "group", req.Group, "reason", req.Reason, "by", req.By)
	return nil
}

// Thaw restores the saved total_slots and deletes the freeze marker, in one
// transaction; thawing a group that is not frozen is a no-op.
func (o *Ops) Thaw(ctx context.Context, group string) error {
	if err := ValidateName("group", group); err != nil {
		return err
	}
	err := o.Open(ctx, group, func(ctx context.Context, s Store) error {
		_, _, err := o.cas(ctx, s, "thaw", group, func(cur Snapshot) (*Write, error) {
			if cur.Frozen == nil {
				return nil, nil
			}
			w := &Write{Guarded: true, Version: cur.Version, GuardFrozen: true, FrozenVersion: cur.FrozenVersion,
				Ops: []Op{{Key: FrozenKey, Delete: true}}}
			if f := cur.Frozen; f.SavedSlots != nil && cur.Sem != nil && cur.Sem.TotalSlots != *f.SavedSlots {
				sem := cur.Sem.Clone()
				sem.TotalSlots = *f.SavedSlots
				b, err := sem.Marshal()
				if err != nil {
					return nil, err
				}
				w.Sem = b
			}
			return w, nil
		})
		return err
	})
	if err != nil {
		return err
	}
	o.Log.Info("group thawed", "group", group)
	return nil
}
