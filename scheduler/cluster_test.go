package scheduler_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/offpeak/offpeak/internal/statefile"
	etcdlocker "github.com/offpeak/offpeak/lockers/etcd"
	"github.com/offpeak/offpeak/lockers/etcd/etcdembed"
	"github.com/offpeak/offpeak/lockers/lockertest"
	"github.com/offpeak/offpeak/lockers/semaphore"
	"github.com/offpeak/offpeak/plugins"
	"github.com/offpeak/offpeak/scheduler"
)

// cluster is a three-member etcd cluster on loopback, in-process.
type cluster struct {
	t       *testing.T
	cfgs    []*embed.Config
	members []*embed.Etcd
	clients []string
}

func startCluster(t *testing.T) *cluster {
	t.Helper()
	c := &cluster{t: t, members: make([]*embed.Etcd, 3)}
	var peers []string
	for i := range 3 {
		cu := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", lockertest.FreePort(t))}
		pu := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", lockertest.FreePort(t))}
		name := fmt.Sprintf("m%d", i)
		cfg := etcdembed.Config(name, filepath.Join(t.TempDir(), name), cu, pu)
		cfg.InitialClusterToken = "offpeak-quorum-test"
		c.cfgs = append(c.cfgs, cfg)
		c.clients = append(c.clients, cu.String())
		peers = append(peers, name+"="+pu.String())
	}
	for _, cfg := range c.cfgs {
		cfg.InitialCluster = strings.Join(peers, ",")
	}
	// Members wait for each other before they serve: start them together.
	errs := make(chan error, 3)
	for i := range 3 {
		go func() {
			e, err := etcdembed.Start(context.Background(), c.cfgs[i], 2*time.Minute)
			c.members[i] = e
			errs <- err
		}()
	}
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatalf("start etcd member: %v", err)
		}
	}
	t.Cleanup(func() {
		for i := range c.members {
			c.stop(i)
		}
	})
	return c
}

// leader returns the index of the member that is leader now.
func (c *cluster) leader() int {
	c.t.Helper()
	for i, e := range c.members {
		if e != nil && e.Server.Leader() == e.Server.MemberID() {
			return i
		}
	}
	c.t.Fatal("no member is leader")
	return -1
}

func (c *cluster) stop(i int) {
	if c.members[i] != nil {
		c.members[i].Close()
		c.members[i] = nil
	}
}

// restart starts a stopped member again on its data dir and ports.
func (c *cluster) restart(i int) {
	c.t.Helper()
	c.cfgs[i].ClusterState = embed.ClusterStateFlagExisting
	e, err := embed.StartEtcd(c.cfgs[i])
	if err != nil {
		c.t.Fatalf("restart member %d: %v", i, err)
	}
	c.members[i] = e
}

// holderWatcher follows every revision of the group's semaphore with its
// own client and remembers the most holders it ever listed.
type holderWatcher struct {
	mu        sync.Mutex
	most      int
	violation string
}

func watchHolders(ctx context.Context, t *testing.T, endpoints []string, group string) *holderWatcher {
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	w := &holderWatcher{}
	ch := cli.Watch(ctx, semaphore.AirlockKey(group), clientv3.WithRev(1))
	go func() {
		for resp := range ch {
			for _, ev := range resp.Events {
				if ev.Type != clientv3.EventTypePut {
					continue
				}
				v, err := semaphore.Parse(ev.Kv.Value)
				w.mu.Lock()
				switch {
				case err != nil && w.violation == "":
					w.violation = fmt.Sprintf("revision %d: %v", ev.Kv.ModRevision, err)
				case err == nil && len(v.Holders) > w.most:
					w.most = len(v.Holders)
					if w.most > 1 && w.violation == "" {
						w.violation = fmt.Sprintf("revision %d lists %v for 1 slot", ev.Kv.ModRevision, v.Holders)
					}
				}
				w.mu.Unlock()
			}
		}
	}()
	return w
}

// fleet tracks what the nodes did, for the test to wait on.
type fleet struct {
	mu       sync.Mutex
	changed  chan struct{}
	down     map[string]bool // rebooted and not yet released
	reboots  map[string]int
	last     map[string]scheduler.Result
	done     map[string]bool
	problems []string
	quorum   atomic.Bool
}

func newFleet() *fleet {
	f := &fleet{changed: make(chan struct{}), down: map[string]bool{}, reboots: map[string]int{},
		last: map[string]scheduler.Result{}, done: map[string]bool{}}
	f.quorum.Store(true)
	return f
}

func (f *fleet) update(fn func()) {
	f.mu.Lock()
	fn()
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
}

// waitUntil blocks until cond holds, re-checking after every change.
func (f *fleet) waitUntil(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	for {
		f.mu.Lock()
		ok, ch := cond(), f.changed
		f.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ctx.Done():
			f.mu.Lock()
			defer f.mu.Unlock()
			t.Fatalf("waiting for %s: %v; last results %v", what, ctx.Err(), f.last)
		case <-ch:
		}
	}
}

// clusterNode is one host: a real agent on the etcd locker, whose reboots
// are recorded and whose release marks it up again.
type clusterNode struct {
	*node
	f      *fleet
	resume chan struct{}
}

func (n *clusterNode) Reboot(ctx context.Context) error {
	n.f.update(func() {
		if !n.f.quorum.Load() {
			n.f.problems = append(n.f.problems, n.id+" rebooted while etcd had no quorum")
		}
		for id, down := range n.f.down {
			if down {
				n.f.problems = append(n.f.problems, fmt.Sprintf("%s rebooted while %s was down with the only slot", n.id, id))
			}
		}
		n.f.down[n.id] = true
		n.f.reboots[n.id]++
	})
	return n.node.Reboot(ctx)
}

// releaseTracker marks a node up before its release is sent, and down
// again if it fails: the slot is still held then, so nobody can be granted
// in between.
type releaseTracker struct {
	plugins.Locker
	n *clusterNode
}

func (r releaseTracker) Release(ctx context.Context, req plugins.ReleaseRequest) error {
	var was bool
	r.n.f.update(func() { was = r.n.f.down[r.n.id]; r.n.f.down[r.n.id] = false })
	err := r.Locker.Release(ctx, req)
	if err != nil && !errors.Is(err, plugins.ErrNotHolder) {
		r.n.f.update(func() { r.n.f.down[r.n.id] = was })
	}
	return err
}

type fleetObserver struct {
	f  *fleet
	id string
}

func (o fleetObserver) Observe(r scheduler.Result) {
	o.f.update(func() { o.f.last[o.id] = r })
}

// TestQuorumLossAcrossLeaderKill: four agents contend for one slot on a
// three-member etcd cluster. The test kills the leader while they contend,
// then takes quorum away while a node that rebooted still holds the slot.
// An independent watcher never sees more than one holder, no node reboots
// while another is down, and nothing reboots without quorum; once quorum
// is back every node finishes (#14).
func TestQuorumLossAcrossLeaderKill(t *testing.T) {
	c := startCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	const group = "ha"
	w := watchHolders(ctx, t, c.clients, group)
	f := newFleet()
	pol := `
strategy = "etcd-lock"
[node]
group = "ha"
[lock]
plugin = "etcd"
slots = 1
timeout = "3s"
[post_boot]
grace = "0s"
`
	clock := scheduler.NewFakeClock(time.Date(2025, 6, 3, 2, 10, 0, 0, time.UTC))
	ids := []string{"n1", "n2", "n3", "n4"}
	nodes := map[string]*clusterNode{}
	var autoResume atomic.Bool
	var wg sync.WaitGroup
	for _, id := range ids {
		n := &clusterNode{node: &node{id: id, staged: true}, f: f, resume: make(chan struct{}, 1)}
		nodes[id] = n
		l := etcdlocker.New(nil)
		raw, _ := json.Marshal(map[string]any{"endpoints": c.clients, "request_timeout": "2s", "dial_timeout": "2s"})
		if err := l.Configure(ctx, raw); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = l.(interface{ Close() error }).Close() })
		ag, err := scheduler.New(scheduler.Options{
			Policy: mustPolicy(t, pol), NodeID: id, Hostname: id, BootID: n.BootID, Clock: clock,
			Locker: releaseTracker{l, n}, Detector: n, Rebooter: n, Observer: fleetObserver{f, id},
			Store:  statefile.File{Path: filepath.Join(t.TempDir(), "state.json")},
			Logger: slog.New(slog.DiscardHandler),
		})
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() { runClusterNode(ctx, t, ag, l, n, group, &autoResume) })
	}
	rebooted := func(n int) func() bool {
		return func() bool {
			total := 0
			for _, r := range f.reboots {
				total += r
			}
			return total >= n
		}
	}
	holder := func() string {
		for id, down := range f.down {
			if down {
				return id
			}
		}
		return ""
	}

	// 1. The first grant: kill the leader while the others contend.
	f.waitUntil(ctx, t, "the first reboot", rebooted(1))
	f.mu.Lock()
	first := holder()
	f.mu.Unlock()
	killed := c.leader()
	c.stop(killed)
	t.Logf("%s rebooted; killed the leader, member %d", first, killed)
	nodes[first].resume <- struct{}{}

	// 2. Progress on two members; then take quorum away while the next
	// node that rebooted holds the slot.
	f.waitUntil(ctx, t, "a reboot after the leader was killed", rebooted(2))
	f.mu.Lock()
	second := holder()
	f.mu.Unlock()
	f.quorum.Store(false)
	other := (killed + 1) % 3
	c.stop(other)
	t.Logf("%s rebooted; stopped member %d: one of three left", second, other)
	nodes[second].resume <- struct{}{}

	// 3. Without quorum: the holder cannot give its slot back, the others
	// cannot get one, and every one of them has said so.
	f.waitUntil(ctx, t, "every node to meet the lost quorum", func() bool {
		for _, id := range ids {
			r, seen := f.last[id]
			switch {
			case id == first:
				continue
			case id == second:
				if !seen || !strings.Contains(r.Reason, "giving the slot back failed") {
					return false
				}
			case !seen || !strings.Contains(r.Reason, "locker unavailable"):
				return false
			}
		}
		return true
	})
	f.mu.Lock()
	if rebooted(3)() {
		t.Errorf("a node rebooted without quorum: %v", f.reboots)
	}
	f.mu.Unlock()

	// 4. Quorum back: everybody finishes, one at a time.
	autoResume.Store(true)
	f.quorum.Store(true)
	c.restart(other)
	f.waitUntil(ctx, t, "every node to finish", func() bool { return len(f.done) == len(ids) })
	cancel()
	wg.Wait()

	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range f.problems {
		t.Error(p)
	}
	for _, id := range ids {
		if f.reboots[id] != 1 {
			t.Errorf("%s rebooted %d times", id, f.reboots[id])
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.violation != "" {
		t.Fatalf("watcher: %s", w.violation)
	}
	if w.most != 1 {
		t.Fatalf("the watcher saw at most %d holders; want exactly 1", w.most)
	}
}

// runClusterNode drives one agent pass by pass until it has rebooted and
// given its slot back. A node that waits for a slot blocks on the locker's
// watch; after its reboot it waits for the test to let it come back.
func runClusterNode(ctx context.Context, t *testing.T, ag *scheduler.Agent, l plugins.Locker, n *clusterNode, group string, autoResume *atomic.Bool) {
	for ctx.Err() == nil {
		before := n.rebootCount()
		r, err := ag.Step(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			t.Errorf("%s: %v", n.id, err)
			return
		}
		switch {
		case n.rebootCount() > before:
			if !autoResume.Load() {
				select {
				case <-n.resume:
				case <-ctx.Done():
					return
				}
			}
			n.bootUp()
		case r.Decision == scheduler.DecisionIdle && n.rebootCount() > 0:
			n.f.update(func() { n.f.done[n.id] = true })
			return
		case r.Decision == scheduler.DecisionWaitSlot && r.LockRevision() > 0:
			// A watch, not a poll: returns when the group changes, or
			// with an error when the member loses its leader.
			wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			_, _ = l.Wait(wctx, group, r.LockRevision())
			cancel()
		default:
			// The cluster cannot answer: each pass already waited for its
			// request timeout, so the next pass follows at once.
		}
	}
}
