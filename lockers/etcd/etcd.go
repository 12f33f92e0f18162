// Package etcd is offpeak's etcd v3 locker. The slot count and holder ids
// live in airlock's semaphore key, so offpeak nodes, airlock and the
// FleetLock clients behind it share one semaphore; offpeak's own records
// (holder metadata, the freeze marker, reclaim events) live under a separate
// prefix and are written in the same transaction as the semaphore change.
//
// Keys for group G (G and ids are query-escaped):
//
//	com.coreos.airlock/groups/G/v1/semaphore   {"total_slots":N,"holders":["id",...]}
//	<prefix>groups/G/holders/<id>              plugins.Holder as JSON
//	<prefix>groups/G/frozen                    {"reason":…,"by":…,"at":…,"saved_total_slots":N}
//	<prefix>groups/G/events/<unixnano>-<id>    reclaim history
//
// LockState.Revision is the etcd store revision of the read that produced
// it; Wait watches the group's keys from the next revision on. The slot
// operations themselves are lockers/semaphore's, shared with the Consul
// locker.
package etcd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/offpeak/offpeak/internal/redact"
	"github.com/offpeak/offpeak/internal/registry"
	"github.com/offpeak/offpeak/internal/tlsutil"
	"github.com/offpeak/offpeak/lockers/semaphore"
	"github.com/offpeak/offpeak/plugins"
)

// Defaults applied by Configure.
const (
	DefaultEndpoint       = "http://127.0.0.1:2379"
	DefaultPrefix         = "offpeak/"
	DefaultDialTimeout    = 5 * time.Second
	DefaultRequestTimeout = 10 * time.Second
)

// Config is the policy's [lock.config] table for plugin "etcd".
type Config struct {
	Endpoints      []string         `json:"endpoints"`
	Prefix         string           `json:"prefix"`
	DialTimeout    plugins.Duration `json:"dial_timeout"`
	RequestTimeout plugins.Duration `json:"request_timeout"`
	Username       string           `json:"username"`
	Password       string           `json:"password"`
	// CAFile alone is enough for TLS: the server is then trusted only if
	// signed by that CA. CertFile/KeyFile add a client certificate.
	CAFile             string `json:"ca_file"`
	CertFile           string `json:"cert_file"`
	KeyFile            string `json:"key_file"`
	InsecureSkipVerify bool   `json:"insecure_skip_verify"`
	ServerName         string `json:"server_name"`
}

// SecretKeys lists the settings `policy show` must not print.
func (Config) SecretKeys() []string { return []string{"password"} }

// Locker implements plugins.Locker on etcd v3. Status, Acquire, Release,
// SetSlots, Freeze and Thaw are the semaphore engine's, on this locker's
// store; Configure, Wait and Close are its own.
type Locker struct {
	semaphore.Ops

	log *slog.Logger

	mu         sync.Mutex
	configured bool
	ccfg       clientv3.Config
	cli        *clientv3.Client // created on first use
	prefix     string
	timeout    time.Duration
}

// New returns an unconfigured etcd locker.
func New(log *slog.Logger) plugins.Locker { return newLocker(log) }

func newLocker(log *slog.Logger) *Locker {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &Locker{log: log}
	l.Ops = semaphore.Ops{Name: "etcd", Log: log, Now: time.Now, Open: l.open}
	return l
}

// Module registers the etcd locker with offpeak's built-ins.
func Module() registry.Module[plugins.Locker] {
	return registry.Module[plugins.Locker]{Name: "etcd", Config: func() any { return &Config{} }, New: registry.Logged(New)}
}

// Configure validates cfg. The client is created on first use, so an
// unreachable cluster (or one that rejects the password) surfaces as an
// error of that call and the next call tries again.
func (l *Locker) Configure(ctx context.Context, raw json.RawMessage) error {
	var cfg Config
	if err := plugins.DecodeConfig(raw, &cfg); err != nil {
		return err
	}
	if len(cfg.Endpoints) == 0 {
		cfg.Endpoints = []string{DefaultEndpoint}
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if !strings.HasSuffix(cfg.Prefix, "/") {
		cfg.Prefix += "/"
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = plugins.Duration(DefaultDialTimeout)
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = plugins.Duration(DefaultRequestTimeout)
	}
	if (cfg.Username == "") != (cfg.Password == "") {
		return fmt.Errorf("%w: etcd: username and password must be set together", plugins.ErrInvalidArgument)
	}
	tlsCfg, err := tlsutil.Optional("etcd", tlsutil.Options{CAFile: cfg.CAFile, CertFile: cfg.CertFile, KeyFile: cfg.KeyFile,
		ServerName: cfg.ServerName, InsecureSkipVerify: cfg.InsecureSkipVerify})
	if err != nil {
		return err
	}
	if tlsCfg == nil {
		for _, e := range cfg.Endpoints {
			if strings.HasPrefix(e, "https://") {
				return fmt.Errorf("%w: etcd: endpoint %s is https but no TLS settings are given (set ca_file)", plugins.ErrInvalidArgument, e)
			}
		}
	} else {
		for _, e := range cfg.Endpoints {
			if strings.HasPrefix(e, "http://") {
				return fmt.Errorf("%w: etcd: TLS is configured but endpoint %s is plain http", plugins.ErrInvalidArgument, e)
			}
		}
	}
	ccfg := clientv3.Config{
		Endpoints:   cfg.Endpoints,
		DialTimeout: cfg.DialTimeout.D(),
		TLS:         tlsCfg,
		Username:    cfg.Username,
		Password:    cfg.Password,
		Logger:      zap.NewNop(),
	}
	l.mu.Lock()
	old := l.cli
	l.cli, l.ccfg, l.configured, l.prefix, l.timeout = nil, ccfg, true, cfg.Prefix, cfg.RequestTimeout.D()
	l.mu.Unlock()
	if old != nil {
		_ = old.Close()
	}
	// The password, and credentials inside endpoint URLs, are deliberately
	// not logged.
	l.log.Debug("etcd locker configured", "endpoints", redact.Value(cfg.Endpoints, false), "prefix", cfg.Prefix,
		"tls", tlsCfg != nil, "client_cert", cfg.CertFile != "", "auth", cfg.Username != "")
	return nil
}

// Close releases the client.
func (l *Locker) Close() error {
	l.mu.Lock()
	cli := l.cli
	l.cli = nil
	l.mu.Unlock()
	if cli == nil {
		return nil
	}
	return cli.Close()
}

func (l *Locker) client() (*clientv3.Client, string, time.Duration, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.configured {
		return nil, "", 0, fmt.Errorf("%w: etcd locker used before Configure", plugins.ErrInvalidArgument)
	}
	if l.cli == nil {
		// With a username, New authenticates and so needs the cluster.
		cli, err := clientv3.New(l.ccfg)
		if err != nil {
			return nil, "", 0, wrapErr(context.Background(), "connect", err)
		}
		l.cli = cli
	}
	return l.cli, l.prefix, l.timeout, nil
}

// store is one group's keys on a client: the etcd locker's semaphore.Store.
type store struct {
	cli    *clientv3.Client
	sem    string // airlock's semaphore key
	prefix string // offpeak's records: prefix + semaphore.HolderKey(id) and so on
}

func newStore(cli *clientv3.Client, prefix, name string) store {
	return store{cli: cli, sem: semaphore.AirlockKey(name), prefix: prefix + "groups/" + semaphore.EscapeSegment(name) + "/"}
}

// open implements semaphore.Ops.Open.
func (l *Locker) open(ctx context.Context, name string, f func(context.Context, semaphore.Store) error) error {
	cli, prefix, timeout, err := l.client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return f(ctx, newStore(cli, prefix, name))
}

// reads are the gets of one snapshot: the semaphore, the holder records and
// the freeze marker, in one transaction so they are consistent.
func (g store) reads() []clientv3.Op {
	return []clientv3.Op{
		clientv3.OpGet(g.sem),
		clientv3.OpGet(g.prefix+semaphore.HoldersDir, clientv3.WithPrefix()),
		clientv3.OpGet(g.prefix + semaphore.FrozenKey),
	}
}

// snapshot decodes the responses of reads() at revision rev.
func (g store) snapshot(rs []*etcdserverpb.ResponseOp, rev int64) (semaphore.Snapshot, error) {
	s := semaphore.Snapshot{Revision: uint64(rev)}
	if kvs := rs[0].GetResponseRange().Kvs; len(kvs) == 1 {
		if err := s.SetSem(kvs[0].Value, uint64(kvs[0].Version)); err != nil {
			return semaphore.Snapshot{}, fmt.Errorf("etcd: key %s: %w", g.sem, err)
		}
	}
	for _, r := range rs[1:] {
		for _, kv := range r.GetResponseRange().Kvs {
			if err := s.AddRecord(strings.TrimPrefix(string(kv.Key), g.prefix), kv.Value, uint64(kv.ModRevision)); err != nil {
				return semaphore.Snapshot{}, fmt.Errorf("etcd: key %s: %w", kv.Key, err)
			}
		}
	}
	return s, nil
}

// Read implements semaphore.Store.
func (g store) Read(ctx context.Context) (semaphore.Snapshot, error) {
	resp, err := g.cli.Txn(ctx).Then(g.reads()...).Commit()
	if err != nil {
		return semaphore.Snapshot{}, wrapErr(ctx, "read", err)
	}
	return g.snapshot(resp.Responses, resp.Header.Revision)
}

// Commit runs w as one transaction; a guard compares the semaphore key's
// version (0: absent) and the freeze marker's mod revision (0: absent),
// which unlike a version never repeats after a delete. When a guard fails,
// the same transaction reads the group instead, for the next round.
func (g store) Commit(ctx context.Context, w semaphore.Write) (bool, uint64, *semaphore.Snapshot, error) {
	var cmps []clientv3.Cmp
	if w.Guarded {
		cmps = append(cmps, clientv3.Compare(clientv3.Version(g.sem), "=", int64(w.Version)))
		if w.GuardFrozen {
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(g.prefix+semaphore.FrozenKey), "=", int64(w.FrozenVersion)))
		}
	}
	ops := make([]clientv3.Op, 0, len(w.Ops)+1)
	if w.Sem != nil {
		ops = append(ops, clientv3.OpPut(g.sem, string(w.Sem)))
	}
	for _, op := range w.Ops {
		if op.Delete {
			ops = append(ops, clientv3.OpDelete(g.prefix+op.Key))
		} else {
			ops = append(ops, clientv3.OpPut(g.prefix+op.Key, string(op.Value)))
		}
	}
	txn := g.cli.Txn(ctx).If(cmps...).Then(ops...)
	if w.Guarded {
		txn = txn.Else(g.reads()...)
	}
	resp, err := txn.Commit()
	if err != nil {
		return false, 0, nil, wrapErr(ctx, "write", err)
	}
	if !resp.Succeeded {
		fresh, err := g.snapshot(resp.Responses, resp.Header.Revision)
		if err != nil {
			return false, 0, nil, err
		}
		return false, 0, &fresh, nil
	}
	return true, uint64(resp.Header.Revision), nil, nil
}

// Wait watches the semaphore key and the group's offpeak keys from
// revision+1 and returns the state after the first change. Changes made
// after the caller's read but before Wait started are replayed by the watch,
// so none is missed. Revision 0 returns the current state at once.
func (l *Locker) Wait(ctx context.Context, group string, revision uint64) (plugins.LockState, error) {
	if err := semaphore.ValidateName("group", group); err != nil {
		return plugins.LockState{}, err
	}
	if revision == 0 {
		return l.Status(ctx, group)
	}
	cli, prefix, _, err := l.client()
	if err != nil {
		return plugins.LockState{}, err
	}
	g := newStore(cli, prefix, group)
	// RequireLeader makes a member cut off from its cluster end the watch
	// instead of leaving the waiter blocked forever.
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	from := clientv3.WithRev(int64(revision) + 1)
	semCh := cli.Watch(wctx, g.sem, from)
	grpCh := cli.Watch(wctx, g.prefix, clientv3.WithPrefix(), from)
	for {
		var resp clientv3.WatchResponse
		var ok bool
		select {
		case <-ctx.Done():
			return plugins.LockState{}, ctx.Err()
		case resp, ok = <-semCh:
		case resp, ok = <-grpCh:
		}
		if ctx.Err() != nil {
			return plugins.LockState{}, ctx.Err()
		}
		if !ok {
			return plugins.LockState{}, fmt.Errorf("etcd: watch of group %q closed: %w", group, plugins.ErrUnavailable)
		}
		if err := resp.Err(); err != nil {
			if errors.Is(err, rpctypes.ErrCompacted) {
				// The revision is gone; the caller re-reads and decides.
				return l.Status(ctx, group)
			}
			return plugins.LockState{}, fmt.Errorf("etcd: watch of group %q: %w: %w", group, plugins.ErrUnavailable, err)
		}
		// Every event is a put or a delete, so any event is a change.
		if len(resp.Events) > 0 {
			return l.Status(ctx, group)
		}
	}
}

// wrapErr classifies a client error: the caller's own cancellation stays as
// it is, connectivity problems become ErrUnavailable.
func wrapErr(ctx context.Context, op string, err error) error {
	if errors.Is(ctx.Err(), context.Canceled) {
		// The caller gave up; that says nothing about the service.
		return fmt.Errorf("etcd: %s: %w", op, ctx.Err())
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return fmt.Errorf("etcd: %s: %w: %w", op, plugins.ErrUnavailable, err)
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Aborted:
		return fmt.Errorf("etcd: %s: %w: %w", op, plugins.ErrUnavailable, err)
	}
	if errors.Is(err, rpctypes.ErrNoLeader) || errors.Is(err, rpctypes.ErrTimeout) ||
		errors.Is(err, rpctypes.ErrLeaderChanged) || errors.Is(err, rpctypes.ErrTimeoutDueToLeaderFail) {
		return fmt.Errorf("etcd: %s: %w: %w", op, plugins.ErrUnavailable, err)
	}
	return fmt.Errorf("etcd: %s: %w", op, err)
}
