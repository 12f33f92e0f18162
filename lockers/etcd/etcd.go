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
//	<prefix>groups/G/frozen                    {"reason":…,"by":…,"at":…}
//	<prefix>groups/G/events/<unixnano>-<id>    reclaim history
//
// LockState.Revision is the etcd store revision of the read that produced
// it; Wait watches the group's keys from the next revision on.
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

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/offpeak/offpeak/lockers/etcd/semaphore"
	"github.com/offpeak/offpeak/plugins"
)

// Defaults applied by Configure.
const (
	DefaultEndpoint       = "http://127.0.0.1:2379"
	DefaultPrefix         = "offpeak/"
	DefaultDialTimeout    = 5 * time.Second
	DefaultRequestTimeout = 10 * time.Second
)

// maxCASAttempts bounds the read-modify-write retries of one call. A lost
// race means another writer made progress, so a few rounds are enough.
const maxCASAttempts = 16

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

// Locker implements plugins.Locker on etcd v3.
type Locker struct {
	log *slog.Logger
	now func() time.Time

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
	return &Locker{log: log, now: time.Now}
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
	tlsCfg, err := clientTLS(cfg)
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
	// The password is deliberately not logged.
	l.log.Debug("etcd locker configured", "endpoints", cfg.Endpoints, "prefix", cfg.Prefix,
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

type keys struct {
	sem, holders, frozen, events, group string
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

func keysFor(prefix, group string) keys {
	g := prefix + "groups/" + semaphore.EscapeSegment(group) + "/"
	return keys{
		sem:     semaphore.AirlockKey(group),
		group:   g,
		holders: g + "holders/",
		frozen:  g + "frozen",
		events:  g + "events/",
	}
}

// snap is one consistent read of a group with the versions a CAS compares.
type snap struct {
	semaphore.Snapshot
	semVersion    int64
	frozenVersion int64
	rev           int64
}

func (l *Locker) read(ctx context.Context, cli *clientv3.Client, k keys) (snap, error) {
	resp, err := cli.Txn(ctx).Then(
		clientv3.OpGet(k.sem),
		clientv3.OpGet(k.holders, clientv3.WithPrefix()),
		clientv3.OpGet(k.frozen),
	).Commit()
	if err != nil {
		return snap{}, wrapErr(ctx, "read", err)
	}
	s := snap{rev: resp.Header.Revision, Snapshot: semaphore.Snapshot{Meta: map[string]plugins.Holder{}}}
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) == 1 {
		s.semVersion = kvs[0].Version
		v, err := semaphore.Parse(kvs[0].Value)
		if err != nil {
			return snap{}, fmt.Errorf("etcd: key %s: %w", k.sem, err)
		}
		s.Sem = v
	}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		id, ok := semaphore.TrimPrefix(string(kv.Key), k.holders)
		if !ok {
			continue
		}
		h, err := semaphore.ParseHolder(id, kv.Value)
		if err != nil {
			return snap{}, fmt.Errorf("etcd: key %s: %w", kv.Key, err)
		}
		s.Meta[id] = h
	}
	if kvs := resp.Responses[2].GetResponseRange().Kvs; len(kvs) == 1 {
		s.frozenVersion = kvs[0].Version
		f, err := semaphore.ParseFrozen(kvs[0].Value)
		if err != nil {
			return snap{}, fmt.Errorf("etcd: key %s: %w", k.frozen, err)
		}
		s.Frozen = f
	}
	return s, nil
}

// call runs f with the configured request timeout.
func (l *Locker) call(ctx context.Context, f func(ctx context.Context, cli *clientv3.Client, prefix string) error) error {
	cli, prefix, timeout, err := l.client()
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return f(cctx, cli, prefix)
}

// Status returns the group's state. A group never written has zero slots.
func (l *Locker) Status(ctx context.Context, group string) (plugins.LockState, error) {
	if err := semaphore.ValidateName("group", group); err != nil {
		return plugins.LockState{}, err
	}
	var st plugins.LockState
	err := l.call(ctx, func(ctx context.Context, cli *clientv3.Client, prefix string) error {
		s, err := l.read(ctx, cli, keysFor(prefix, group))
		if err != nil {
			return err
		}
		st = s.State(group, uint64(s.rev))
		return nil
	})
	return st, err
}

// Acquire takes a slot with one compare-and-swap transaction that also
// writes the holder's metadata, deletes reclaimed holders and checks that
// the group was not frozen meanwhile.
func (l *Locker) Acquire(ctx context.Context, req plugins.AcquireRequest) (plugins.AcquireResult, error) {
	now := req.Now
	if now.IsZero() {
		now = l.now()
	}
	var res plugins.AcquireResult
	err := l.call(ctx, func(ctx context.Context, cli *clientv3.Client, prefix string) error {
		k := keysFor(prefix, req.Group)
		for range maxCASAttempts {
			s, err := l.read(ctx, cli, k)
			if err != nil {
				return err
			}
			p, err := semaphore.Decide(s.Snapshot, req, now)
			if err != nil {
				return err
			}
			if !p.Writes() {
				// Refused: full, or frozen (State.Frozen tells which).
				res = plugins.AcquireResult{State: s.State(req.Group, uint64(s.rev))}
				return nil
			}
			cmps := []clientv3.Cmp{clientv3.Compare(clientv3.Version(k.sem), "=", s.semVersion)}
			if p.CheckNotFrozen {
				cmps = append(cmps, clientv3.Compare(clientv3.Version(k.frozen), "=", 0))
			}
			var ops []clientv3.Op
			if p.Sem != nil {
				b, err := p.Sem.Marshal()
				if err != nil {
					return err
				}
				ops = append(ops, clientv3.OpPut(k.sem, string(b)))
			}
			if p.Granted {
				b, err := json.Marshal(p.Holder)
				if err != nil {
					return err
				}
				ops = append(ops, clientv3.OpPut(k.holders+semaphore.EscapeSegment(p.Holder.ID), string(b)))
			}
			for _, r := range p.Reclaimed {
				ev, err := json.Marshal(semaphore.Event{Time: now, Kind: "reclaim", Reason: semaphore.StaleReason(r, now), By: req.Holder.ID, Holder: r})
				if err != nil {
					return err
				}
				ops = append(ops,
					clientv3.OpDelete(k.holders+semaphore.EscapeSegment(r.ID)),
					clientv3.OpPut(k.events+semaphore.EventSuffix(now, r.ID), string(ev)))
			}
			resp, err := cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
			if err != nil {
				return wrapErr(ctx, "acquire", err)
			}
			if !resp.Succeeded {
				continue
			}
			for _, r := range p.Reclaimed {
				l.log.Warn("reclaimed stale reboot slot", "group", req.Group, "holder", r.ID,
					"deadline", r.Deadline, "by", req.Holder.ID)
			}
			res = plugins.AcquireResult{
				Granted:   p.Granted,
				State:     p.Apply(s.Snapshot).State(req.Group, uint64(resp.Header.Revision)),
				Reclaimed: p.Reclaimed,
			}
			return nil
		}
		return fmt.Errorf("etcd: acquire in group %q: %w", req.Group, plugins.ErrConflict)
	})
	return res, err
}

// Release removes req.ID from the semaphore and deletes its metadata.
func (l *Locker) Release(ctx context.Context, req plugins.ReleaseRequest) error {
	if err := semaphore.ValidateName("group", req.Group); err != nil {
		return err
	}
	if err := semaphore.ValidateName("holder id", req.ID); err != nil {
		return err
	}
	return l.call(ctx, func(ctx context.Context, cli *clientv3.Client, prefix string) error {
		k := keysFor(prefix, req.Group)
		for range maxCASAttempts {
			s, err := l.read(ctx, cli, k)
			if err != nil {
				return err
			}
			if s.Sem == nil || !s.Sem.Has(req.ID) {
				return fmt.Errorf("%q in group %q: %w", req.ID, req.Group, plugins.ErrNotHolder)
			}
			sem := s.Sem.Clone()
			sem.Remove(req.ID)
			b, err := sem.Marshal()
			if err != nil {
				return err
			}
			resp, err := cli.Txn(ctx).
				If(clientv3.Compare(clientv3.Version(k.sem), "=", s.semVersion)).
				Then(clientv3.OpPut(k.sem, string(b)), clientv3.OpDelete(k.holders+semaphore.EscapeSegment(req.ID))).
				Commit()
			if err != nil {
				return wrapErr(ctx, "release", err)
			}
			if resp.Succeeded {
				l.log.Info("released reboot slot", "group", req.Group, "holder", req.ID, "reason", req.Reason)
				return nil
			}
		}
		return fmt.Errorf("etcd: release in group %q: %w", req.Group, plugins.ErrConflict)
	})
}

// SetSlots rewrites total_slots, creating the semaphore if needed. Holders
// are never removed.
func (l *Locker) SetSlots(ctx context.Context, group string, slots int) (plugins.LockState, error) {
	if err := semaphore.ValidateName("group", group); err != nil {
		return plugins.LockState{}, err
	}
	if slots < 0 {
		return plugins.LockState{}, fmt.Errorf("%w: slot count %d is negative", plugins.ErrInvalidArgument, slots)
	}
	var st plugins.LockState
	err := l.call(ctx, func(ctx context.Context, cli *clientv3.Client, prefix string) error {
		k := keysFor(prefix, group)
		for range maxCASAttempts {
			s, err := l.read(ctx, cli, k)
			if err != nil {
				return err
			}
			sem := semaphore.New(uint64(slots))
			if s.Sem != nil {
				sem = s.Sem.Clone()
				sem.TotalSlots = uint64(slots)
			}
			b, err := sem.Marshal()
			if err != nil {
				return err
			}
			resp, err := cli.Txn(ctx).
				If(clientv3.Compare(clientv3.Version(k.sem), "=", s.semVersion)).
				Then(clientv3.OpPut(k.sem, string(b))).
				Commit()
			if err != nil {
				return wrapErr(ctx, "set slots", err)
			}
			if resp.Succeeded {
				s.Sem = sem
				st = s.State(group, uint64(resp.Header.Revision))
				return nil
			}
		}
		return fmt.Errorf("etcd: set slots of group %q: %w", group, plugins.ErrConflict)
	})
	return st, err
}

// Freeze writes the freeze marker. Acquire compares the marker's absence in
// its transaction, so a freeze and a concurrent acquire cannot both win.
func (l *Locker) Freeze(ctx context.Context, req plugins.FreezeRequest) error {
	if err := semaphore.ValidateName("group", req.Group); err != nil {
		return err
	}
	at := req.At
	if at.IsZero() {
		at = l.now()
	}
	b, err := json.Marshal(semaphore.Frozen{Reason: req.Reason, By: req.By, At: at.UTC()})
	if err != nil {
		return err
	}
	return l.call(ctx, func(ctx context.Context, cli *clientv3.Client, prefix string) error {
		if _, err := cli.Put(ctx, keysFor(prefix, req.Group).frozen, string(b)); err != nil {
			return wrapErr(ctx, "freeze", err)
		}
		l.log.Warn("group frozen", "group", req.Group, "reason", req.Reason, "by", req.By)
		return nil
	})
}

// Thaw deletes the freeze marker; thawing a group that is not frozen is a
// no-op.
func (l *Locker) Thaw(ctx context.Context, group string) error {
	if err := semaphore.ValidateName("group", group); err != nil {
		return err
	}
	return l.call(ctx, func(ctx context.Context, cli *clientv3.Client, prefix string) error {
		if _, err := cli.Delete(ctx, keysFor(prefix, group).frozen); err != nil {
			return wrapErr(ctx, "thaw", err)
		}
		l.log.Info("group thawed", "group", group)
		return nil
	})
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
	k := keysFor(prefix, group)
	// RequireLeader makes a member cut off from its cluster end the watch
	// instead of leaving the waiter blocked forever.
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	from := clientv3.WithRev(int64(revision) + 1)
	semCh := cli.Watch(wctx, k.sem, from)
	grpCh := cli.Watch(wctx, k.group, clientv3.WithPrefix(), from)
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
		if relevant(resp.Events) {
			return l.Status(ctx, group)
		}
	}
}

func relevant(evs []*clientv3.Event) bool {
	for _, ev := range evs {
		if ev.Type == mvccpb.PUT || ev.Type == mvccpb.DELETE {
			return true
		}
	}
	return false
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
