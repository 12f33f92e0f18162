package simulate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"time"

	etcdlocker "github.com/offpeak/offpeak/lockers/etcd"
	filelocker "github.com/offpeak/offpeak/lockers/file"
	"github.com/offpeak/offpeak/lockers/fleetlock"
	"github.com/offpeak/offpeak/plugins"
)

// backend is the lock service of one run: the locker the agents talk to,
// the locker the operator uses directly, and the independent watcher.
type backend struct {
	name string
	// agents is what every node's locker wrapper calls.
	agents plugins.Locker
	// direct is the storage locker itself (operator actions, final check).
	direct plugins.Locker

	// probe, called while a node asks for its reboot, returns a token that
	// heldAt later resolves to "was the node a holder at that moment".
	probe  func(group, id string) holderProbe
	heldAt func(p holderProbe, group, id string) bool
	// observe is called after every event that touched group.
	observe func(group string)
	// settle waits until the watcher has seen everything written.
	settle func(ctx context.Context) error
	stats  func() watchStats
	close  func()
}

// holderProbe is either an answer already known (file) or an etcd revision
// to look up in the watcher's history.
type holderProbe struct {
	known bool
	held  bool
	rev   int64
}

// tempBase prefers a RAM-backed directory: the file locker syncs every
// write, and the simulation needs its semantics, not its durability.
func tempBase() string {
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		if f, err := os.CreateTemp("/dev/shm", ".offpeak-probe-*"); err == nil {
			f.Close()
			os.Remove(f.Name())
			return "/dev/shm"
		}
	}
	return ""
}

func newBackend(ctx context.Context, kind, baseline string, slots int, log *slog.Logger) (*backend, error) {
	dir, err := os.MkdirTemp(tempBase(), "offpeak-simulate-")
	if err != nil {
		return nil, fmt.Errorf("temporary directory: %w", err)
	}
	var b *backend
	switch kind {
	case "file":
		b, err = newFileBackend(ctx, dir, slots)
	case "etcd":
		b, err = newEtcdBackend(ctx, dir, slots)
	default:
		err = fmt.Errorf("unknown locker %q (file or etcd)", kind)
	}
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	inner := b.close
	b.close = func() {
		inner()
		os.RemoveAll(dir)
	}
	if baseline == BaselineFleetlockPoll {
		if err := b.behindFleetlock(ctx, log); err != nil {
			b.close()
			return nil, err
		}
	}
	return b, nil
}

func newFileBackend(ctx context.Context, dir string, slots int) (*backend, error) {
	l := filelocker.New(nil)
	cfg, err := json.Marshal(filelocker.Config{Dir: dir})
	if err != nil {
		return nil, err
	}
	if err := l.Configure(ctx, cfg); err != nil {
		return nil, fmt.Errorf("file locker: %w", err)
	}
	w := &fileWatcher{dir: dir, slots: slots, maxHolders: map[string]int{}, lastRev: map[string]uint64{}}
	return &backend{
		name:   "file",
		agents: l,
		direct: l,
		probe: func(group, id string) holderProbe {
			holders, _, _, err := w.read(group)
			return holderProbe{known: true, held: err == nil && slices.Contains(holders, id)}
		},
		heldAt:  func(p holderProbe, _, _ string) bool { return p.held },
		observe: w.observe,
		settle:  func(context.Context) error { return nil },
		stats:   w.stats,
		close:   func() {},
	}, nil
}

// fileWatcher reads a group's file after every event, independently of the
// locker: it decodes the same airlock-shaped JSON.
type fileWatcher struct {
	dir        string
	slots      int
	revisions  int
	maxHolders map[string]int
	lastRev    map[string]uint64
	over       []string
}

type fileSemaphore struct {
	TotalSlots int      `json:"total_slots"`
	Holders    []string `json:"holders"`
	Revision   uint64   `json:"revision"`
}

func (w *fileWatcher) read(group string) ([]string, int, uint64, error) {
	b, err := os.ReadFile(filepath.Join(w.dir, group+".json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, 0, 0, nil
	}
	if err != nil {
		return nil, 0, 0, err
	}
	var s fileSemaphore
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, 0, 0, err
	}
	return s.Holders, s.TotalSlots, s.Revision, nil
}

func (w *fileWatcher) observe(group string) {
	holders, total, rev, err := w.read(group)
	if err != nil {
		w.over = append(w.over, fmt.Sprintf("group %s: unreadable semaphore file: %v", group, err))
		return
	}
	if rev == w.lastRev[group] {
		return
	}
	w.lastRev[group] = rev
	w.revisions++
	w.maxHolders[group] = max(w.maxHolders[group], len(holders))
	if len(holders) > w.slots || len(holders) > max(total, 1) {
		w.over = append(w.over, fmt.Sprintf("revision %d: group %s: %d holders for %d slots", rev, group, len(holders), w.slots))
	}
}

func (w *fileWatcher) stats() watchStats {
	mh := make(map[string]int, len(w.maxHolders))
	for g, n := range w.maxHolders {
		mh[g] = n
	}
	return watchStats{revisions: w.revisions, maxHolders: mh, over: slices.Clone(w.over)}
}

func newEtcdBackend(ctx context.Context, dir string, slots int) (*backend, error) {
	srv, err := startEtcd(ctx, filepath.Join(dir, "etcd"))
	if err != nil {
		return nil, err
	}
	l := etcdlocker.New(nil)
	cfg, err := json.Marshal(map[string]any{"endpoints": []string{srv.endpoint}, "request_timeout": "30s"})
	if err != nil {
		srv.close()
		return nil, err
	}
	if err := l.Configure(ctx, cfg); err != nil {
		srv.close()
		return nil, fmt.Errorf("etcd locker: %w", err)
	}
	w, err := newEtcdWatcher(ctx, srv.endpoint, srv.rev()+1, slots)
	if err != nil {
		srv.close()
		return nil, err
	}
	return &backend{
		name:   "etcd",
		agents: l,
		direct: l,
		probe: func(string, string) holderProbe {
			return holderProbe{rev: srv.rev()}
		},
		heldAt: func(p holderProbe, group, id string) bool {
			if p.known {
				return p.held
			}
			return w.heldAt(group, id, p.rev)
		},
		observe: func(string) {},
		settle: func(ctx context.Context) error {
			return w.waitFor(ctx, srv.rev())
		},
		stats: w.stats,
		close: func() {
			w.close()
			if c, ok := l.(interface{ Close() error }); ok {
				_ = c.Close()
			}
			srv.close()
		},
	}, nil
}

// adminToken lets the nodes' FleetLock clients freeze a group; the server
// is on loopback and lives as long as the run.
const adminToken = "offpeak-simulate"

// behindFleetlock puts an offpeak FleetLock server, on a loopback port, in
// front of the storage locker; the agents then use the FleetLock client.
func (b *backend) behindFleetlock(ctx context.Context, log *slog.Logger) error {
	srv, err := fleetlock.NewServer(fleetlock.ServerConfig{Locker: b.direct, Logger: quiet(log), AdminToken: adminToken,
		// Every group of the run, created with the count the nodes ask for.
		Group: func(string) (int, bool) { return 0, true }})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("fleetlock listener: %w", err)
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = hs.Serve(ln)
	}()
	cl := fleetlock.New(nil)
	cfg, err := json.Marshal(map[string]any{"url": "http://" + ln.Addr().String(), "token": adminToken})
	if err == nil {
		err = cl.Configure(ctx, cfg)
	}
	if err != nil {
		_ = hs.Close()
		<-served
		return fmt.Errorf("fleetlock client: %w", err)
	}
	b.name += " behind fleetlock"
	b.agents = cl
	inner := b.close
	b.close = func() {
		if c, ok := cl.(interface{ Close() error }); ok {
			_ = c.Close()
		}
		_ = hs.Close()
		<-served
		inner()
	}
	return nil
}

// quiet keeps the FleetLock server's per-request logs out of the report:
// they go to the given logger at debug level only.
func quiet(log *slog.Logger) *slog.Logger {
	if log == nil || !log.Enabled(context.Background(), slog.LevelDebug) {
		return slog.New(slog.DiscardHandler)
	}
	return log
}
