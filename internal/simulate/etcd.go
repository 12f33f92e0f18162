package simulate

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/offpeak/offpeak/lockers/etcd/etcdembed"
	"github.com/offpeak/offpeak/lockers/semaphore"
)

// airlockPrefix is where every group's semaphore key lives.
const airlockPrefix = "com.coreos.airlock/groups/"

// embeddedEtcd is a single-member etcd in this process, on loopback, with
// fsync off: the simulation needs its semantics, not its durability.
type embeddedEtcd struct {
	e        *embed.Etcd
	endpoint string
}

func startEtcd(ctx context.Context, dir string) (*embeddedEtcd, error) {
	var lastErr error
	for range 5 {
		e, ep, err := tryStartEtcd(ctx, dir)
		if err == nil {
			return &embeddedEtcd{e: e, endpoint: ep}, nil
		}
		lastErr = err
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("embedded etcd: %w", lastErr)
}

func tryStartEtcd(ctx context.Context, dir string) (*embed.Etcd, string, error) {
	cport, err := freePort()
	if err != nil {
		return nil, "", err
	}
	pport, err := freePort()
	if err != nil {
		return nil, "", err
	}
	cu := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", cport)}
	pu := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", pport)}
	cfg := etcdembed.Config("offpeak-simulate", dir, cu, pu)
	cfg.UnsafeNoFsync = true
	e, err := etcdembed.Start(ctx, cfg, 30*time.Second)
	if err != nil {
		return nil, "", err
	}
	return e, cu.String(), nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// rev is the store's current revision, read inside the process: no request.
func (s *embeddedEtcd) rev() int64 { return s.e.Server.KV().Rev() }

func (s *embeddedEtcd) close() { s.e.Close() }

// holderSet is a group's holders as of one revision.
type holderSet struct {
	rev     int64
	holders []string
}

// etcdWatcher follows every key of the store with its own client and
// decodes each semaphore revision, independently of the lockers under test.
type etcdWatcher struct {
	cli    *clientv3.Client
	cancel context.CancelFunc
	done   chan struct{}
	slots  int

	mu         sync.Mutex
	progress   chan struct{}
	lastRev    int64
	revisions  int
	hist       map[string][]holderSet
	maxHolders map[string]int
	over       []string
	err        error
}

func newEtcdWatcher(ctx context.Context, endpoint string, fromRev int64, slots int) (*etcdWatcher, error) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return nil, fmt.Errorf("watcher client: %w", err)
	}
	wctx, cancel := context.WithCancel(ctx)
	w := &etcdWatcher{
		cli: cli, cancel: cancel, done: make(chan struct{}), slots: slots,
		progress: make(chan struct{}, 1), lastRev: fromRev - 1,
		hist: map[string][]holderSet{}, maxHolders: map[string]int{},
	}
	ch := cli.Watch(wctx, "", clientv3.WithPrefix(), clientv3.WithRev(fromRev))
	go w.run(wctx, ch)
	return w, nil
}

func (w *etcdWatcher) run(ctx context.Context, ch clientv3.WatchChan) {
	defer close(w.done)
	for resp := range ch {
		if err := resp.Err(); err != nil {
			w.fail(fmt.Errorf("watch: %w", err))
			return
		}
		w.mu.Lock()
		for _, ev := range resp.Events {
			key := string(ev.Kv.Key)
			group, ok := semaphoreGroup(key)
			if !ok {
				continue
			}
			var holders []string
			if ev.Type == clientv3.EventTypePut {
				v, err := semaphore.Parse(ev.Kv.Value)
				if err != nil {
					w.over = append(w.over, fmt.Sprintf("revision %d: group %s: undecodable semaphore: %v", ev.Kv.ModRevision, group, err))
					continue
				}
				holders = v.Holders
				// A revision that adds a holder must fit total_slots. One
				// that only keeps holders may list more: a freeze sets
				// total_slots to 0 and holders keep their slots.
				if uint64(len(holders)) > v.TotalSlots && w.adds(group, holders) {
					w.over = append(w.over, fmt.Sprintf("revision %d: group %s: a holder added beyond total_slots %d (%s)", ev.Kv.ModRevision, group, v.TotalSlots, strings.Join(holders, ", ")))
				}
			}
			w.revisions++
			if len(holders) > w.slots {
				w.over = append(w.over, fmt.Sprintf("revision %d: group %s: %d holders for %d slots (%s)", ev.Kv.ModRevision, group, len(holders), w.slots, strings.Join(holders, ", ")))
			}
			w.maxHolders[group] = max(w.maxHolders[group], len(holders))
			w.hist[group] = append(w.hist[group], holderSet{rev: ev.Kv.ModRevision, holders: holders})
		}
		if resp.Header.Revision > w.lastRev {
			w.lastRev = resp.Header.Revision
		}
		w.mu.Unlock()
		select {
		case w.progress <- struct{}{}:
		default:
		}
		if ctx.Err() != nil {
			return
		}
	}
	if ctx.Err() == nil {
		w.fail(errors.New("watch channel closed"))
	}
}

// adds reports whether holders lists an id the group's last watched
// revision did not.
func (w *etcdWatcher) adds(group string, holders []string) bool {
	var prev []string
	if h := w.hist[group]; len(h) > 0 {
		prev = h[len(h)-1].holders
	}
	for _, id := range holders {
		if !slices.Contains(prev, id) {
			return true
		}
	}
	return false
}

func (w *etcdWatcher) fail(err error) {
	w.mu.Lock()
	if w.err == nil {
		w.err = err
	}
	w.mu.Unlock()
	select {
	case w.progress <- struct{}{}:
	default:
	}
}

// semaphoreGroup extracts the group from an airlock semaphore key.
func semaphoreGroup(key string) (string, bool) {
	rest, ok := strings.CutPrefix(key, airlockPrefix)
	if !ok {
		return "", false
	}
	esc, ok := strings.CutSuffix(rest, "/v1/semaphore")
	if !ok || strings.Contains(esc, "/") {
		return "", false
	}
	g, err := url.QueryUnescape(esc)
	if err != nil {
		return "", false
	}
	return g, true
}

// waitFor blocks until the watcher has seen revision rev.
func (w *etcdWatcher) waitFor(ctx context.Context, rev int64) error {
	timer := time.NewTimer(time.Minute)
	defer timer.Stop()
	for {
		w.mu.Lock()
		last, err := w.lastRev, w.err
		w.mu.Unlock()
		if err != nil {
			return err
		}
		if last >= rev {
			return nil
		}
		// Ask the server for a progress notification so a quiet tail of
		// the history still reports the latest revision.
		if err := w.cli.RequestProgress(ctx); err != nil && ctx.Err() != nil {
			return ctx.Err()
		}
		select {
		case <-w.progress:
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
			return fmt.Errorf("watcher stuck at revision %d, want %d", last, rev)
		}
	}
}

// heldAt reports whether id was a holder of group at revision rev.
func (w *etcdWatcher) heldAt(group, id string, rev int64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	h := w.hist[group]
	i := sort.Search(len(h), func(i int) bool { return h[i].rev > rev })
	if i == 0 {
		return false
	}
	for _, x := range h[i-1].holders {
		if x == id {
			return true
		}
	}
	return false
}

func (w *etcdWatcher) stats() watchStats {
	w.mu.Lock()
	defer w.mu.Unlock()
	mh := make(map[string]int, len(w.maxHolders))
	for g, n := range w.maxHolders {
		mh[g] = n
	}
	return watchStats{revisions: w.revisions, maxHolders: mh, over: append([]string(nil), w.over...)}
}

func (w *etcdWatcher) close() {
	w.cancel()
	<-w.done
	_ = w.cli.Close()
}

// watchStats is what an independent watcher observed.
type watchStats struct {
	revisions  int
	maxHolders map[string]int
	over       []string
}
