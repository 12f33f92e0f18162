// Package lockertest is a conformance suite for plugins.Locker
// implementations. A backend's test calls Run with a constructor that returns
// a configured locker on a real store; every subtest uses its own group, so
// the constructor may hand out lockers sharing one store.
//
// Behaviour pinned here, for every backend:
//   - at most Slots holders; Slots only matters when the group is created;
//   - Acquire is idempotent for a holder and refreshes its record;
//   - Release of a non-holder is ErrNotHolder;
//   - a frozen group refuses new holders — Granted false, no error, and
//     State.Frozen set, so the caller can say why — but re-grants existing
//     holders, and they may release; SetSlots while frozen sets the count
//     the thaw restores; a freeze of a group not yet created makes the
//     thaw create it with FreezeRequest.Slots;
//   - an id held by a record of another machine (another boot id or
//     hostname, see plugins.SameNode) is refused with ErrNodeIDCollision
//     and nothing changes; the same node after a reboot (PreviousBootID)
//     is granted again;
//   - control characters in names and holder fields are ErrInvalidArgument;
//   - bad names (empty group or id) are ErrInvalidArgument, for every call;
//   - SetSlots never evicts; below the holder count nobody new is granted;
//   - a holder past its Deadline is removed only by a request with
//     ReclaimStale whose Now is at or after that Deadline;
//   - Wait returns once the group changed after the given revision, and
//     returns ctx's error when ctx ends first.
package lockertest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/offpeak/offpeak/plugins"
)

// Options says which rules a locker follows where lockers may differ.
type Options struct {
	// StaleByServer: the locker is reached over a network it must not
	// trust with time (a FleetLock server): the caller's Now and
	// ReclaimStale never free a slot, and the server sets AcquiredAt and
	// Deadline by its own clock and stale_after (none in the suite).
	StaleByServer bool
}

// Run runs the suite. newLocker is called once per subtest.
func Run(t *testing.T, newLocker func(t *testing.T) plugins.Locker) {
	RunWith(t, Options{}, newLocker)
}

// RunWith runs the suite for a locker with the given options.
func RunWith(t *testing.T, opts Options, newLocker func(t *testing.T) plugins.Locker) {
	testStaleReclaim := testStaleReclaim
	testHolderMetadata := testHolderMetadata
	if opts.StaleByServer {
		testStaleReclaim, testHolderMetadata = testStaleIgnoresClient, testHolderMetadataServerClock
	}
	cases := []struct {
		name string
		fn   func(t *testing.T, l plugins.Locker, group string)
	}{
		{"GrantsUpToSlots", testGrantsUpToSlots},
		{"SlotsOnlyOnCreation", testSlotsOnlyOnCreation},
		{"IdempotentAcquire", testIdempotentAcquire},
		{"HolderMetadata", testHolderMetadata},
		{"Release", testRelease},
		{"FrozenRefusesNewKeepsExisting", testFrozen},
		{"SetSlotsWithHolders", testSetSlots},
		{"StaleReclaim", testStaleReclaim},
		{"WaitWakesOnChange", testWaitWakes},
		{"WaitHonoursContext", testWaitContext},
		{"ConcurrentAcquireNeverExceedsSlots", testConcurrent},
		{"InvalidArguments", testInvalid},
		{"RefusesUnprintable", testUnprintable},
		{"NodeIDCollision", testCollision},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := newLocker(t)
			c.fn(t, l, Group(t, c.name))
		})
	}
}

// Group returns a group name unique to this run, so subtests sharing a store
// do not see each other.
func Group(t testing.TB, base string) string {
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("lt-%s-%s", base, hex.EncodeToString(b))
}

// Ctx returns a context that ends with the test (at most a minute).
func Ctx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func acquire(t *testing.T, l plugins.Locker, group, id string, slots int) plugins.AcquireResult {
	t.Helper()
	res, err := l.Acquire(Ctx(t), plugins.AcquireRequest{Group: group, Holder: plugins.Holder{ID: id}, Slots: slots})
	if err != nil {
		t.Fatalf("Acquire(%s): %v", id, err)
	}
	return res
}

func mustGrant(t *testing.T, l plugins.Locker, group, id string, slots int) plugins.AcquireResult {
	t.Helper()
	res := acquire(t, l, group, id, slots)
	if !res.Granted {
		t.Fatalf("Acquire(%s) not granted; state %+v", id, res.State)
	}
	if !res.State.Holds(id) {
		t.Fatalf("Acquire(%s) granted but the returned state does not list it: %+v", id, res.State)
	}
	return res
}

func mustDeny(t *testing.T, l plugins.Locker, group, id string, slots int) plugins.AcquireResult {
	t.Helper()
	res := acquire(t, l, group, id, slots)
	if res.Granted {
		t.Fatalf("Acquire(%s) granted, want refused; state %+v", id, res.State)
	}
	if res.State.Holds(id) {
		t.Fatalf("Acquire(%s) refused but the state lists it: %+v", id, res.State)
	}
	return res
}

func status(t *testing.T, l plugins.Locker, group string) plugins.LockState {
	t.Helper()
	st, err := l.Status(Ctx(t), group)
	if err != nil {
		t.Fatalf("Status: %v", err)
	}
	return st
}

func release(t *testing.T, l plugins.Locker, group, id string) {
	t.Helper()
	if err := l.Release(Ctx(t), plugins.ReleaseRequest{Group: group, ID: id, Reason: "test"}); err != nil {
		t.Fatalf("Release(%s): %v", id, err)
	}
}

func ids(st plugins.LockState) map[string]bool {
	m := map[string]bool{}
	for _, h := range st.Holders {
		m[h.ID] = true
	}
	return m
}

func wantHolders(t *testing.T, st plugins.LockState, want ...string) {
	t.Helper()
	got := ids(st)
	if len(got) != len(want) || len(st.Holders) != len(want) {
		t.Fatalf("holders = %v, want %v", st.Holders, want)
	}
	for _, w := range want {
		if !got[w] {
			t.Fatalf("holders = %v, want %v", st.Holders, want)
		}
	}
}

func testGrantsUpToSlots(t *testing.T, l plugins.Locker, g string) {
	for _, id := range []string{"n1", "n2", "n3"} {
		mustGrant(t, l, g, id, 3)
	}
	for _, id := range []string{"n4", "n5"} {
		res := mustDeny(t, l, g, id, 3)
		if res.State.Slots != 3 || len(res.State.Holders) != 3 {
			t.Fatalf("refusal state = %+v, want 3 of 3 slots used", res.State)
		}
	}
	st := status(t, l, g)
	if st.Group != g || st.Slots != 3 {
		t.Fatalf("status = %+v, want group %s with 3 slots", st, g)
	}
	wantHolders(t, st, "n1", "n2", "n3")
}

func testSlotsOnlyOnCreation(t *testing.T, l plugins.Locker, g string) {
	mustGrant(t, l, g, "n1", 2)
	mustGrant(t, l, g, "n2", 5)
	mustDeny(t, l, g, "n3", 5)
	if st := status(t, l, g); st.Slots != 2 {
		t.Fatalf("slots = %d, want the creating request's 2", st.Slots)
	}
}

func testIdempotentAcquire(t *testing.T, l plugins.Locker, g string) {
	ctx := Ctx(t)
	mustGrant(t, l, g, "n1", 1)
	res, err := l.Acquire(ctx, plugins.AcquireRequest{Group: g, Slots: 1, Holder: plugins.Holder{ID: "n1", Hostname: "refreshed"}})
	if err != nil || !res.Granted {
		t.Fatalf("second Acquire by the holder = %+v, %v; want granted", res, err)
	}
	st := status(t, l, g)
	wantHolders(t, st, "n1")
	if h := st.Holders[0]; h.Hostname != "refreshed" {
		t.Fatalf("holder record not refreshed: %+v", h)
	}
	mustDeny(t, l, g, "n2", 1)
}

func testHolderMetadata(t *testing.T, l plugins.Locker, g string) {
	at := time.Date(2026, 3, 1, 2, 0, 0, 0, time.UTC)
	want := plugins.Holder{
		ID: "n1", Hostname: "web-1.example", BootID: "b00t", Version: "4152.2.0",
		AcquiredAt: at, Deadline: at.Add(2 * time.Hour), Meta: map[string]string{"rack": "r7"},
	}
	res, err := l.Acquire(Ctx(t), plugins.AcquireRequest{Group: g, Slots: 1, Holder: want})
	if err != nil || !res.Granted {
		t.Fatalf("Acquire = %+v, %v", res, err)
	}
	st := status(t, l, g)
	wantHolders(t, st, "n1")
	got := st.Holders[0]
	if got.Hostname != want.Hostname || got.BootID != want.BootID || got.Version != want.Version ||
		!got.AcquiredAt.Equal(want.AcquiredAt) || !got.Deadline.Equal(want.Deadline) || got.Meta["rack"] != "r7" {
		t.Fatalf("holder = %+v, want %+v", got, want)
	}
}

func testRelease(t *testing.T, l plugins.Locker, g string) {
	ctx := Ctx(t)
	mustGrant(t, l, g, "n1", 1)
	mustDeny(t, l, g, "n2", 1)
	release(t, l, g, "n1")
	if st := status(t, l, g); st.Holds("n1") || len(st.Holders) != 0 {
		t.Fatalf("after release holders = %v", st.Holders)
	}
	err := l.Release(ctx, plugins.ReleaseRequest{Group: g, ID: "n1"})
	if !errors.Is(err, plugins.ErrNotHolder) {
		t.Fatalf("second Release = %v, want ErrNotHolder", err)
	}
	err = l.Release(ctx, plugins.ReleaseRequest{Group: g + "-never-created", ID: "n1"})
	if !errors.Is(err, plugins.ErrNotHolder) {
		t.Fatalf("Release in an unknown group = %v, want ErrNotHolder", err)
	}
	mustGrant(t, l, g, "n2", 1)
}

func testFrozen(t *testing.T, l plugins.Locker, g string) {
	ctx := Ctx(t)
	mustGrant(t, l, g, "n1", 3)
	at := time.Date(2026, 3, 1, 3, 0, 0, 0, time.UTC)
	if err := l.Freeze(ctx, plugins.FreezeRequest{Group: g, Reason: "post-boot check failed", By: "n1", At: at}); err != nil {
		t.Fatalf("Freeze: %v", err)
	}
	st := status(t, l, g)
	if !st.Frozen || st.FrozenReason != "post-boot check failed" || st.FrozenBy != "n1" || !st.FrozenAt.Equal(at) {
		t.Fatalf("status after freeze = %+v", st)
	}
	res, err := l.Acquire(ctx, plugins.AcquireRequest{Group: g, Slots: 3, Holder: plugins.Holder{ID: "n2"}})
	if err != nil || res.Granted || !res.State.Frozen || res.State.FrozenReason != "post-boot check failed" {
		t.Fatalf("Acquire in a frozen group = %+v, %v; want refused with the frozen state", res, err)
	}
	if st := status(t, l, g); st.Holds("n2") {
		t.Fatal("frozen group gained a holder")
	}
	res, err = l.Acquire(ctx, plugins.AcquireRequest{Group: g, Slots: 3, Holder: plugins.Holder{ID: "n1"}})
	if err != nil || !res.Granted {
		t.Fatalf("existing holder re-acquiring in a frozen group = %+v, %v; want granted", res, err)
	}
	release(t, l, g, "n1")
	if err := l.Thaw(ctx, g); err != nil {
		t.Fatalf("Thaw: %v", err)
	}
	if st := status(t, l, g); st.Frozen || st.FrozenReason != "" {
		t.Fatalf("status after thaw = %+v", st)
	}
	mustGrant(t, l, g, "n2", 3)
	if err := l.Thaw(ctx, g); err != nil {
		t.Fatalf("Thaw of a thawed group: %v", err)
	}
	// set-max while frozen: nobody new even with more slots, and the thaw
	// brings the new count.
	if err := l.Freeze(ctx, plugins.FreezeRequest{Group: g, Reason: "again", By: "op"}); err != nil {
		t.Fatalf("Freeze: %v", err)
	}
	if st, err := l.SetSlots(ctx, g, 5); err != nil || st.Slots != 5 || !st.Frozen {
		t.Fatalf("SetSlots while frozen = %+v, %v; want 5 slots, still frozen", st, err)
	}
	mustDeny(t, l, g, "n3", 3)
	if err := l.Thaw(ctx, g); err != nil {
		t.Fatalf("Thaw: %v", err)
	}
	if st := status(t, l, g); st.Slots != 5 || st.Frozen {
		t.Fatalf("status after thaw = %+v, want the 5 slots set while frozen", st)
	}
	mustGrant(t, l, g, "n3", 3)
	// A group frozen before it has a semaphore refuses too; the thaw gives
	// it the slot count the freeze named.
	g2 := g + "-new"
	if err := l.Freeze(ctx, plugins.FreezeRequest{Group: g2, Reason: "hold", By: "admin", Slots: 2}); err != nil {
		t.Fatalf("Freeze: %v", err)
	}
	if res, err := l.Acquire(ctx, plugins.AcquireRequest{Group: g2, Slots: 1, Holder: plugins.Holder{ID: "n1"}}); err != nil || res.Granted || !res.State.Frozen {
		t.Fatalf("Acquire in a frozen new group = %+v, %v; want refused with the frozen state", res, err)
	}
	if err := l.Thaw(ctx, g2); err != nil {
		t.Fatalf("Thaw: %v", err)
	}
	if res := mustGrant(t, l, g2, "n1", 5); res.State.Slots != 2 || res.State.Frozen {
		t.Fatalf("first grant after thaw = %+v, want the freeze's 2 slots, not frozen", res.State)
	}
	mustGrant(t, l, g2, "n2", 5)
	mustDeny(t, l, g2, "n3", 5)
}

func testSetSlots(t *testing.T, l plugins.Locker, g string) {
	ctx := Ctx(t)
	for _, id := range []string{"n1", "n2", "n3"} {
		mustGrant(t, l, g, id, 3)
	}
	st, err := l.SetSlots(ctx, g, 1)
	if err != nil {
		t.Fatalf("SetSlots(1): %v", err)
	}
	if st.Slots != 1 {
		t.Fatalf("SetSlots returned slots %d", st.Slots)
	}
	wantHolders(t, st, "n1", "n2", "n3")
	if st := status(t, l, g); st.Slots != 1 {
		t.Fatalf("status after SetSlots(1) = %+v, want 1 slot", st)
	} else {
		wantHolders(t, st, "n1", "n2", "n3")
	}
	mustDeny(t, l, g, "n4", 3)
	release(t, l, g, "n1")
	release(t, l, g, "n2")
	mustDeny(t, l, g, "n4", 3) // one holder left, one slot: still full
	release(t, l, g, "n3")
	mustGrant(t, l, g, "n4", 3)
	if _, err := l.SetSlots(ctx, g, 2); err != nil {
		t.Fatalf("SetSlots(2): %v", err)
	}
	mustGrant(t, l, g, "n5", 3)
	wantHolders(t, status(t, l, g), "n4", "n5")

	if _, err := l.SetSlots(ctx, g, -1); !errors.Is(err, plugins.ErrInvalidArgument) {
		t.Fatalf("SetSlots(-1) = %v, want ErrInvalidArgument", err)
	}
	g2 := g + "-new"
	st, err = l.SetSlots(ctx, g2, 4)
	if err != nil || st.Slots != 4 || len(st.Holders) != 0 {
		t.Fatalf("SetSlots on a new group = %+v, %v", st, err)
	}
	mustGrant(t, l, g2, "n1", 1)
	if st := status(t, l, g2); st.Slots != 4 {
		t.Fatalf("slots = %d, want 4 set before the first acquire", st.Slots)
	}
}

func testStaleReclaim(t *testing.T, l plugins.Locker, g string) {
	ctx := Ctx(t)
	t0 := time.Date(2026, 3, 1, 2, 0, 0, 0, time.UTC)
	stale := plugins.Holder{ID: "dead", AcquiredAt: t0, Deadline: t0.Add(time.Hour)}
	if res, err := l.Acquire(ctx, plugins.AcquireRequest{Group: g, Slots: 2, Holder: stale, Now: t0}); err != nil || !res.Granted {
		t.Fatalf("Acquire(dead) = %+v, %v", res, err)
	}
	// A holder without a deadline is never stale.
	if res, err := l.Acquire(ctx, plugins.AcquireRequest{Group: g, Slots: 2, Holder: plugins.Holder{ID: "forever"}, Now: t0}); err != nil || !res.Granted {
		t.Fatalf("Acquire(forever) = %+v, %v", res, err)
	}
	cases := []struct {
		name    string
		reclaim bool
		now     time.Time
		granted bool
	}{
		{"past deadline without ReclaimStale", false, t0.Add(2 * time.Hour), false},
		{"before deadline with ReclaimStale", true, t0.Add(30 * time.Minute), false},
		{"past deadline with ReclaimStale", true, t0.Add(2 * time.Hour), true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res, err := l.Acquire(ctx, plugins.AcquireRequest{Group: g, Slots: 2, Holder: plugins.Holder{ID: "new"}, ReclaimStale: c.reclaim, Now: c.now})
			if err != nil {
				t.Fatalf("Acquire: %v", err)
			}
			if res.Granted != c.granted {
				t.Fatalf("granted = %v, want %v (state %+v)", res.Granted, c.granted, res.State)
			}
			st := status(t, l, g)
			if !c.granted {
				if len(res.Reclaimed) != 0 {
					t.Fatalf("reclaimed %v, want none", res.Reclaimed)
				}
				wantHolders(t, res.State, "dead", "forever")
				wantHolders(t, st, "dead", "forever")
				return
			}
			if len(res.Reclaimed) != 1 || res.Reclaimed[0].ID != "dead" || !res.Reclaimed[0].Deadline.Equal(stale.Deadline) {
				t.Fatalf("reclaimed = %+v, want the dead holder", res.Reclaimed)
			}
			wantHolders(t, res.State, "forever", "new")
			wantHolders(t, st, "forever", "new")
		})
	}
}

func testWaitWakes(t *testing.T, l plugins.Locker, g string) {
	ctx := Ctx(t)
	st := mustGrant(t, l, g, "n1", 1).State
	type result struct {
		st  plugins.LockState
		err error
	}
	done := make(chan result, 1)
	go func() {
		s, err := l.Wait(ctx, g, st.Revision)
		done <- result{s, err}
	}()
	release(t, l, g, "n1")
	r := <-done
	if r.err != nil {
		t.Fatalf("Wait: %v", r.err)
	}
	if r.st.Revision == st.Revision || r.st.Holds("n1") {
		t.Fatalf("Wait returned %+v; want the state after the release (revision was %d)", r.st, st.Revision)
	}
	// A change that happened before Wait is called is not missed.
	before := status(t, l, g)
	mustGrant(t, l, g, "n2", 1)
	after, err := l.Wait(ctx, g, before.Revision)
	if err != nil || !after.Holds("n2") {
		t.Fatalf("Wait after an earlier change = %+v, %v; want n2 holding", after, err)
	}
	// Freezing is a change too.
	cur := status(t, l, g)
	go func() {
		s, err := l.Wait(ctx, g, cur.Revision)
		done <- result{s, err}
	}()
	if err := l.Freeze(ctx, plugins.FreezeRequest{Group: g, Reason: "r", By: "t"}); err != nil {
		t.Fatal(err)
	}
	if r := <-done; r.err != nil || !r.st.Frozen {
		t.Fatalf("Wait across a freeze = %+v, %v", r.st, r.err)
	}
}

func testWaitContext(t *testing.T, l plugins.Locker, g string) {
	st := mustGrant(t, l, g, "n1", 1).State
	cases := []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
		want error
	}{
		{"deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 100*time.Millisecond)
		}, context.DeadlineExceeded},
		{"cancelled", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx, cancel
		}, context.Canceled},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := c.ctx()
			defer cancel()
			_, err := l.Wait(ctx, g, st.Revision)
			if !errors.Is(err, c.want) {
				t.Fatalf("Wait on an unchanged group = %v, want %v", err, c.want)
			}
		})
	}
}

func testConcurrent(t *testing.T, l plugins.Locker, g string) {
	ctx := Ctx(t)
	const n, slots = 12, 2
	var wg sync.WaitGroup
	granted := make(chan string, n)
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			id := fmt.Sprintf("n%d", i)
			for {
				res, err := l.Acquire(ctx, plugins.AcquireRequest{Group: g, Slots: slots, Holder: plugins.Holder{ID: id}})
				if errors.Is(err, plugins.ErrConflict) {
					continue
				}
				if err != nil {
					errs <- err
					return
				}
				if res.Granted {
					granted <- id
				}
				return
			}
		})
	}
	wg.Wait()
	close(granted)
	close(errs)
	for err := range errs {
		t.Fatalf("Acquire: %v", err)
	}
	var got []string
	for id := range granted {
		got = append(got, id)
	}
	if len(got) != slots {
		t.Fatalf("%d concurrent acquirers granted (%v), want exactly %d", len(got), got, slots)
	}
	wantHolders(t, status(t, l, g), got...)
}

func testInvalid(t *testing.T, l plugins.Locker, g string) { InvalidArguments(t, l, g) }

// InvalidArguments checks that every call with an empty group or holder id,
// and SetSlots with a negative count, fails with ErrInvalidArgument. A
// backend's test may also run it on a locker whose store is unreachable: the
// check must come before any request, so the answer is the same.
func InvalidArguments(t *testing.T, l plugins.Locker, g string) {
	t.Helper()
	ctx := Ctx(t)
	cases := []struct {
		name string
		call func() error
	}{
		{"acquire empty group", func() error {
			_, err := l.Acquire(ctx, plugins.AcquireRequest{Slots: 1, Holder: plugins.Holder{ID: "n1"}})
			return err
		}},
		{"acquire empty id", func() error {
			_, err := l.Acquire(ctx, plugins.AcquireRequest{Group: g, Slots: 1})
			return err
		}},
		{"release empty group", func() error { return l.Release(ctx, plugins.ReleaseRequest{ID: "n1"}) }},
		{"release empty id", func() error { return l.Release(ctx, plugins.ReleaseRequest{Group: g}) }},
		{"status empty group", func() error { _, err := l.Status(ctx, ""); return err }},
		{"wait empty group", func() error { _, err := l.Wait(ctx, "", 1); return err }},
		{"set slots empty group", func() error { _, err := l.SetSlots(ctx, "", 1); return err }},
		{"set slots negative", func() error { _, err := l.SetSlots(ctx, g, -1); return err }},
		{"freeze empty group", func() error { return l.Freeze(ctx, plugins.FreezeRequest{Reason: "r", By: "t"}) }},
		{"thaw empty group", func() error { return l.Thaw(ctx, "") }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := c.call(); !errors.Is(err, plugins.ErrInvalidArgument) {
				t.Fatalf("got %v, want ErrInvalidArgument", err)
			}
		})
	}
}

// StateCalls is each Locker call that reads group g's stored state, by name,
// for tests that plant a bad record and expect every call to refuse it.
func StateCalls(ctx context.Context, l plugins.Locker, g string) map[string]func() error {
	return map[string]func() error{
		"status": func() error { _, err := l.Status(ctx, g); return err },
		"acquire": func() error {
			_, err := l.Acquire(ctx, plugins.AcquireRequest{Group: g, Slots: 1, Holder: plugins.Holder{ID: "n1"}})
			return err
		},
		"release":   func() error { return l.Release(ctx, plugins.ReleaseRequest{Group: g, ID: "a"}) },
		"set-slots": func() error { _, err := l.SetSlots(ctx, g, 5); return err },
	}
}

// Unprintable is a set of names and holder fields a locker must refuse:
// control characters would forge rows in `offpeak locks status` or retitle
// an operator's terminal.
var Unprintable = map[string]string{
	"escape":     "n1\x1b]0;owned\x07",
	"newline":    "n1\nn2    web-2    2026-01-01T00:00:00Z",
	"NUL":        "n1\x00",
	"CSI":        "n1\x1b[2J",
	"C1 control": "n1\u009b2J",
	"bad UTF-8":  "n1\xff",
}

func testUnprintable(t *testing.T, l plugins.Locker, g string) {
	ctx := Ctx(t)
	for name, bad := range Unprintable {
		t.Run(name, func(t *testing.T) {
			reqs := map[string]plugins.AcquireRequest{
				"id":       {Group: g, Slots: 1, Holder: plugins.Holder{ID: bad}},
				"group":    {Group: g + bad, Slots: 1, Holder: plugins.Holder{ID: "n1"}},
				"hostname": {Group: g, Slots: 1, Holder: plugins.Holder{ID: "n1", Hostname: bad}},
				"boot id":  {Group: g, Slots: 1, Holder: plugins.Holder{ID: "n1", BootID: bad}},
				"version":  {Group: g, Slots: 1, Holder: plugins.Holder{ID: "n1", Version: bad}},
			}
			for field, req := range reqs {
				if _, err := l.Acquire(ctx, req); !errors.Is(err, plugins.ErrInvalidArgument) {
					t.Errorf("Acquire with %s %q = %v, want ErrInvalidArgument", field, bad, err)
				}
			}
			if err := l.Release(ctx, plugins.ReleaseRequest{Group: g, ID: bad}); !errors.Is(err, plugins.ErrInvalidArgument) {
				t.Errorf("Release of id %q = %v, want ErrInvalidArgument", bad, err)
			}
			if err := l.Freeze(ctx, plugins.FreezeRequest{Group: g + bad, Reason: "r", By: "t"}); !errors.Is(err, plugins.ErrInvalidArgument) {
				t.Errorf("Freeze of group %q = %v, want ErrInvalidArgument", g+bad, err)
			}
		})
	}
	if st := status(t, l, g); len(st.Holders) != 0 {
		t.Fatalf("refused requests left holders %v", st.Holders)
	}
}

func testCollision(t *testing.T, l plugins.Locker, g string) {
	ctx := Ctx(t)
	orig := plugins.Holder{ID: "n1", Hostname: "web-1", BootID: "boot-1"}
	if res, err := l.Acquire(ctx, plugins.AcquireRequest{Group: g, Slots: 2, Holder: orig}); err != nil || !res.Granted {
		t.Fatalf("Acquire = %+v, %v", res, err)
	}
	cases := []struct {
		name     string
		holder   plugins.Holder
		previous string
		same     bool
	}{
		{"same boot again", orig, "", true},
		{"clone: same hostname, another boot", plugins.Holder{ID: "n1", Hostname: "web-1", BootID: "boot-9"}, "", false},
		{"clone: another hostname, another boot", plugins.Holder{ID: "n1", Hostname: "web-9", BootID: "boot-9"}, "", false},
		{"clone naming a boot that is not the record's", plugins.Holder{ID: "n1", Hostname: "web-1", BootID: "boot-9"}, "boot-8", false},
		{"another hostname, same boot", plugins.Holder{ID: "n1", Hostname: "web-9", BootID: "boot-1"}, "", false},
		{"the node after its reboot", plugins.Holder{ID: "n1", Hostname: "web-1", BootID: "boot-2"}, "boot-1", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := status(t, l, g)
			res, err := l.Acquire(ctx, plugins.AcquireRequest{Group: g, Slots: 2, Holder: c.holder, PreviousBootID: c.previous})
			if c.same {
				if err != nil || !res.Granted {
					t.Fatalf("Acquire = %+v, %v; want granted to the same node", res, err)
				}
				return
			}
			if !errors.Is(err, plugins.ErrNodeIDCollision) || res.Granted {
				t.Fatalf("Acquire = %+v, %v; want ErrNodeIDCollision", res, err)
			}
			after := status(t, l, g)
			if len(after.Holders) != 1 || after.Holders[0].BootID != before.Holders[0].BootID || after.Holders[0].Hostname != before.Holders[0].Hostname {
				t.Fatalf("a refused clone changed the record: %+v → %+v", before.Holders, after.Holders)
			}
		})
	}
}

// testStaleIgnoresClient: a caller's clock and reclaim flag free nothing.
func testStaleIgnoresClient(t *testing.T, l plugins.Locker, g string) {
	ctx := Ctx(t)
	t0 := time.Date(2026, 3, 1, 2, 0, 0, 0, time.UTC)
	for _, id := range []string{"dead", "forever"} {
		h := plugins.Holder{ID: id, AcquiredAt: t0, Deadline: t0.Add(time.Hour)}
		if res, err := l.Acquire(ctx, plugins.AcquireRequest{Group: g, Slots: 2, Holder: h, Now: t0}); err != nil || !res.Granted {
			t.Fatalf("Acquire(%s) = %+v, %v", id, res, err)
		}
	}
	for _, now := range []time.Time{t0.Add(2 * time.Hour), time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)} {
		res, err := l.Acquire(ctx, plugins.AcquireRequest{Group: g, Slots: 2, Holder: plugins.Holder{ID: "new"}, ReclaimStale: true, Now: now})
		if err != nil || res.Granted || len(res.Reclaimed) != 0 {
			t.Fatalf("Acquire claiming now=%s = %+v, %v; want refused, nothing reclaimed", now, res, err)
		}
		wantHolders(t, status(t, l, g), "dead", "forever")
	}
}

// testHolderMetadataServerClock: what the node says about itself is kept;
// its times are the server's.
func testHolderMetadataServerClock(t *testing.T, l plugins.Locker, g string) {
	at := time.Date(2001, 3, 1, 2, 0, 0, 0, time.UTC)
	sent := plugins.Holder{ID: "n1", Hostname: "web-1.example", BootID: "b00t", Version: "4152.2.0",
		AcquiredAt: at, Deadline: at.Add(time.Hour), Meta: map[string]string{"rack": "r7"}}
	if res, err := l.Acquire(Ctx(t), plugins.AcquireRequest{Group: g, Slots: 1, Holder: sent}); err != nil || !res.Granted {
		t.Fatalf("Acquire = %+v, %v", res, err)
	}
	st := status(t, l, g)
	wantHolders(t, st, "n1")
	got := st.Holders[0]
	if got.Hostname != sent.Hostname || got.BootID != sent.BootID || got.Version != sent.Version || got.Meta["rack"] != "r7" {
		t.Fatalf("holder = %+v, want %+v", got, sent)
	}
	if got.AcquiredAt.Equal(at) || got.AcquiredAt.IsZero() || !got.Deadline.IsZero() {
		t.Fatalf("holder times = acquired %s, deadline %s; want the server's clock and no deadline without its stale_after", got.AcquiredAt, got.Deadline)
	}
}
