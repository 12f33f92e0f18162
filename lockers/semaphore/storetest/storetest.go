// Package storetest checks a semaphore.Store against its contract: what a
// backend's Read reports and which guarded Commits land. The races the
// guards exist for (a freeze landing between an Acquire's read and its
// write, two writers on one version) are hard to provoke through a locker;
// here they are played out step by step on the store itself.
package storetest

import (
	"context"
	"reflect"
	"testing"

	"github.com/offpeak/offpeak/lockers/semaphore"
)

// Run plays the guard cases on s, which must be an empty group.
func Run(t *testing.T, s semaphore.Store) {
	t.Helper()
	ctx := context.Background()
	read := func() semaphore.Snapshot {
		t.Helper()
		snap, err := s.Read(ctx)
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
		return snap
	}
	commit := func(name string, w semaphore.Write, want bool) uint64 {
		t.Helper()
		ok, rev, fresh, err := s.Commit(ctx, w)
		if err != nil {
			t.Fatalf("%s: Commit: %v", name, err)
		}
		if ok != want {
			t.Fatalf("%s: Commit landed %v, want %v", name, ok, want)
		}
		if ok && fresh != nil {
			t.Fatalf("%s: a write that landed returned a snapshot", name)
		}
		if !ok && fresh != nil {
			// What a failed write reads in passing is the group as it is.
			if now := read(); !reflect.DeepEqual(*fresh, now) {
				t.Fatalf("%s: snapshot of the failed write = %+v, a read = %+v", name, *fresh, now)
			}
		}
		return rev
	}
	sem := func(holders ...string) []byte {
		v := semaphore.New(2)
		for _, h := range holders {
			v.Add(h)
		}
		b, err := v.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	holder := func(id string) semaphore.Op {
		return semaphore.Op{Key: semaphore.HolderKey(id), Value: []byte(`{"id":"` + id + `"}`)}
	}

	empty := read()
	if empty.Sem != nil || empty.Version != 0 || empty.Frozen != nil || len(empty.Meta) != 0 {
		t.Fatalf("empty group reads as %+v", empty)
	}
	// Version 0 guards on absence, with or without a new semaphore.
	commit("records while the semaphore is absent", semaphore.Write{Guarded: true, Version: 0, Ops: []semaphore.Op{holder("x")}}, true)
	commit("records guarded by a version that does not exist", semaphore.Write{Guarded: true, Version: 7, Ops: []semaphore.Op{holder("y")}}, false)
	commit("drop them", semaphore.Write{Ops: []semaphore.Op{{Key: semaphore.HolderKey("x"), Delete: true}}}, true)
	rev1 := commit("create", semaphore.Write{Guarded: true, Version: 0, GuardFrozen: true, Sem: sem("a"), Ops: []semaphore.Op{holder("a")}}, true)
	commit("create again from the same read", semaphore.Write{Guarded: true, Version: 0, Sem: sem("b")}, false)

	s1 := read()
	if s1.Sem == nil || !s1.Sem.Has("a") || s1.Sem.Has("b") || s1.Version == 0 || s1.Meta["a"].ID != "a" {
		t.Fatalf("after create: %+v", s1)
	}
	if s1.Revision < rev1 {
		t.Fatalf("read revision %d is before the write's %d", s1.Revision, rev1)
	}
	commit("write from a stale version", semaphore.Write{Guarded: true, Version: s1.Version + 1000, Sem: sem("a", "b")}, false)
	commit("refresh from a stale version", semaphore.Write{Guarded: true, Version: s1.Version + 1000, Ops: []semaphore.Op{holder("a")}}, false)
	commit("refresh from the current version", semaphore.Write{Guarded: true, Version: s1.Version, Ops: []semaphore.Op{holder("a")}}, true)
	if s := read(); s.Version != s1.Version {
		t.Fatalf("a refresh changed the semaphore's version %d → %d", s1.Version, s.Version)
	}

	// A freeze lands between a read and the write planned from it.
	commit("freeze", semaphore.Write{Ops: []semaphore.Op{{Key: semaphore.FrozenKey, Value: []byte(`{"reason":"r"}`)}}}, true)
	commit("add a holder to a group frozen since the read", semaphore.Write{Guarded: true, Version: s1.Version, GuardFrozen: true, Sem: sem("a", "b"), Ops: []semaphore.Op{holder("b")}}, false)
	s2 := read()
	if s2.Frozen == nil || s2.Frozen.Reason != "r" || s2.Sem.Has("b") || s2.Meta["b"].ID != "" {
		t.Fatalf("after a refused add in a frozen group: %+v", s2)
	}
	if s2.FrozenVersion == 0 {
		t.Fatalf("a frozen group reads with no marker version: %+v", s2)
	}
	commit("release while frozen", semaphore.Write{Guarded: true, Version: s2.Version, Sem: sem(), Ops: []semaphore.Op{{Key: semaphore.HolderKey("a"), Delete: true}}}, true)
	// The marker's version never repeats: a write planned against one
	// freeze fails against a later one, even after a thaw and a new freeze.
	marker := func(reason string) []semaphore.Op {
		return []semaphore.Op{{Key: semaphore.FrozenKey, Value: []byte(`{"reason":"` + reason + `"}`)}}
	}
	s2b := read()
	commit("thaw", semaphore.Write{Guarded: true, Version: s2b.Version, GuardFrozen: true, FrozenVersion: s2b.FrozenVersion,
		Ops: []semaphore.Op{{Key: semaphore.FrozenKey, Delete: true}}}, true)
	commit("freeze again", semaphore.Write{Guarded: true, Version: s2b.Version, GuardFrozen: true, Ops: marker("again")}, true)
	commit("change the marker of the first freeze", semaphore.Write{Guarded: true, Version: s2b.Version, GuardFrozen: true, FrozenVersion: s2b.FrozenVersion, Ops: marker("stale")}, false)
	s2c := read()
	if s2c.Frozen == nil || s2c.Frozen.Reason != "again" {
		t.Fatalf("after a stale marker write: %+v", s2c.Frozen)
	}
	commit("thaw again", semaphore.Write{Guarded: true, Version: s2c.Version, GuardFrozen: true, FrozenVersion: s2c.FrozenVersion,
		Ops: []semaphore.Op{{Key: semaphore.FrozenKey, Delete: true}}}, true)
	s3 := read()
	if s3.Frozen != nil || s3.Sem.Has("a") || len(s3.Meta) != 0 || s3.Version == s2.Version {
		t.Fatalf("after release and thaw: %+v", s3)
	}
	commit("add after the thaw", semaphore.Write{Guarded: true, Version: s3.Version, GuardFrozen: true, Sem: sem("b"), Ops: []semaphore.Op{holder("b")}}, true)
	if s := read(); !s.Sem.Has("b") || s.Meta["b"].ID != "b" || s.Revision <= s3.Revision {
		t.Fatalf("after add: %+v (revision before %d)", s, s3.Revision)
	}
}
