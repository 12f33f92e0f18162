// Package consul is offpeak's Consul locker. A group's slots are the same
// JSON holder set the etcd locker and airlock use, {"total_slots":N,
// "holders":[...]}, stored as a durable KV record and changed only by a
// Consul transaction that compares ModifyIndex (index 0 to create). A slot
// is never bound to a Consul session: a session's TTL or health check would
// drop the slot while its node is rebooting. It is released explicitly.
//
// Keys for group G (G and ids are query-escaped):
//
//	<prefix>/groups/G/semaphore         {"total_slots":N,"holders":["id",...]}
//	<prefix>/groups/G/holders/<id>      plugins.Holder as JSON
//	<prefix>/groups/G/frozen            {"reason":…,"by":…,"at":…}
//	<prefix>/groups/G/events/<ns>-<id>  reclaim history
//
// LockState.Revision is the X-Consul-Index of the group's key prefix; Wait
// is a blocking query on that prefix.
package consul

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/offpeak/offpeak/lockers/etcd/semaphore"
	"github.com/offpeak/offpeak/plugins"
)

// Defaults applied by Configure.
const (
	DefaultAddress        = "127.0.0.1:8500"
	DefaultPrefix         = "offpeak"
	DefaultRequestTimeout = 10 * time.Second
	// maxBlock bounds one blocking query; Wait issues another after it.
	maxBlock = 5 * time.Minute
)

const maxCASAttempts = 16

// Config is the policy's [lock.config] table for plugin "consul".
type Config struct {
	Address    string `json:"address"` // host:port of the agent's HTTP(S) API
	Scheme     string `json:"scheme"`  // http or https
	Datacenter string `json:"datacenter"`
	Prefix     string `json:"prefix"`
	// Token or TokenFile is the ACL token (needs key read/write on Prefix).
	// Never logged.
	Token     string `json:"token"`
	TokenFile string `json:"token_file"`
	// CAFile alone gives CA-only trust; CertFile/KeyFile add a client
	// certificate for agents with verify_incoming.
	CAFile             string           `json:"ca_file"`
	CertFile           string           `json:"cert_file"`
	KeyFile            string           `json:"key_file"`
	ServerName         string           `json:"server_name"`
	InsecureSkipVerify bool             `json:"insecure_skip_verify"`
	RequestTimeout     plugins.Duration `json:"request_timeout"`
}

// Locker implements plugins.Locker on Consul KV.
type Locker struct {
	log *slog.Logger
	now func() time.Time

	mu      sync.Mutex
	cli     *api.Client
	prefix  string
	timeout time.Duration
}

// New returns an unconfigured Consul locker.
func New(log *slog.Logger) plugins.Locker { return newLocker(log) }

func newLocker(log *slog.Logger) *Locker {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Locker{log: log, now: time.Now}
}

// Configure validates the settings and builds the API client (no request
// is made).
func (l *Locker) Configure(_ context.Context, raw json.RawMessage) error {
	var cfg Config
	if err := plugins.DecodeConfig(raw, &cfg); err != nil {
		return err
	}
	if cfg.Address == "" {
		cfg.Address = DefaultAddress
	}
	if cfg.Scheme == "" {
		cfg.Scheme = "http"
		if cfg.CAFile != "" || cfg.CertFile != "" {
			cfg.Scheme = "https"
		}
	}
	if cfg.Scheme != "http" && cfg.Scheme != "https" {
		return fmt.Errorf("%w: consul scheme %q must be http or https", plugins.ErrInvalidArgument, cfg.Scheme)
	}
	if _, _, err := net.SplitHostPort(cfg.Address); err != nil {
		return fmt.Errorf("%w: consul address %q must be host:port", plugins.ErrInvalidArgument, cfg.Address)
	}
	if cfg.Scheme == "http" && (cfg.CAFile != "" || cfg.CertFile != "" || cfg.KeyFile != "") {
		return fmt.Errorf("%w: consul TLS files given but scheme is http", plugins.ErrInvalidArgument)
	}
	if (cfg.CertFile == "") != (cfg.KeyFile == "") {
		return fmt.Errorf("%w: consul cert_file and key_file must be set together", plugins.ErrInvalidArgument)
	}
	for _, f := range []string{cfg.CAFile, cfg.CertFile, cfg.KeyFile} {
		if f != "" {
			if _, err := os.Stat(f); err != nil {
				return fmt.Errorf("%w: consul: %w", plugins.ErrInvalidArgument, err)
			}
		}
	}
	if cfg.Token != "" && cfg.TokenFile != "" {
		return fmt.Errorf("%w: consul token and token_file are exclusive", plugins.ErrInvalidArgument)
	}
	if cfg.TokenFile != "" {
		b, err := os.ReadFile(cfg.TokenFile)
		if err != nil {
			return fmt.Errorf("%w: consul token_file: %w", plugins.ErrInvalidArgument, err)
		}
		cfg.Token = strings.TrimSpace(string(b))
	}
	cfg.Prefix = strings.Trim(cfg.Prefix, "/")
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = plugins.Duration(DefaultRequestTimeout)
	}
	ac := &api.Config{
		Address:    cfg.Address,
		Scheme:     cfg.Scheme,
		Datacenter: cfg.Datacenter,
		Token:      cfg.Token,
		TLSConfig: api.TLSConfig{
			Address:            cfg.ServerName,
			CAFile:             cfg.CAFile,
			CertFile:           cfg.CertFile,
			KeyFile:            cfg.KeyFile,
			InsecureSkipVerify: cfg.InsecureSkipVerify,
		},
	}
	cli, err := api.NewClient(ac)
	if err != nil {
		return fmt.Errorf("%w: consul client: %w", plugins.ErrInvalidArgument, err)
	}
	l.mu.Lock()
	l.cli, l.prefix, l.timeout = cli, cfg.Prefix, cfg.RequestTimeout.D()
	l.mu.Unlock()
	l.log.Debug("consul locker configured", "address", cfg.Address, "scheme", cfg.Scheme,
		"prefix", cfg.Prefix, "client_cert", cfg.CertFile != "", "token", cfg.Token != "")
	return nil
}

type keys struct{ group, sem, holders, frozen, events string }

func keysFor(prefix, group string) keys {
	g := prefix + "/groups/" + semaphore.EscapeSegment(group) + "/"
	return keys{group: g, sem: g + "semaphore", holders: g + "holders/", frozen: g + "frozen", events: g + "events/"}
}

func (l *Locker) client() (*api.Client, string, time.Duration, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cli == nil {
		return nil, "", 0, fmt.Errorf("%w: consul locker used before Configure", plugins.ErrInvalidArgument)
	}
	return l.cli, l.prefix, l.timeout, nil
}

type snap struct {
	semaphore.Snapshot
	semIndex uint64 // 0: absent
	index    uint64
}

// decode builds a snapshot from the pairs under a group prefix.
func decode(k keys, pairs api.KVPairs, index uint64) (snap, error) {
	s := snap{index: index, Snapshot: semaphore.Snapshot{Meta: map[string]plugins.Holder{}}}
	for _, p := range pairs {
		switch {
		case p.Key == k.sem:
			v, err := semaphore.Parse(p.Value)
			if err != nil {
				return snap{}, fmt.Errorf("consul: key %s: %w", p.Key, err)
			}
			s.Sem, s.semIndex = v, p.ModifyIndex
		case p.Key == k.frozen:
			f, err := semaphore.ParseFrozen(p.Value)
			if err != nil {
				return snap{}, fmt.Errorf("consul: key %s: %w", p.Key, err)
			}
			s.Frozen = f
		case strings.HasPrefix(p.Key, k.holders):
			id, ok := semaphore.TrimPrefix(p.Key, k.holders)
			if !ok {
				continue
			}
			h, err := semaphore.ParseHolder(id, p.Value)
			if err != nil {
				return snap{}, fmt.Errorf("consul: key %s: %w", p.Key, err)
			}
			s.Meta[id] = h
		}
	}
	return s, nil
}

func (l *Locker) read(ctx context.Context, cli *api.Client, k keys) (snap, error) {
	q := (&api.QueryOptions{RequireConsistent: true}).WithContext(ctx)
	pairs, meta, err := cli.KV().List(k.group, q)
	if err != nil {
		return snap{}, wrapErr(ctx, "read", err)
	}
	return decode(k, pairs, meta.LastIndex)
}

func (l *Locker) call(ctx context.Context, f func(ctx context.Context, cli *api.Client, prefix string) error) error {
	cli, prefix, timeout, err := l.client()
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return f(cctx, cli, prefix)
}

// txn runs ops atomically; false means a compare failed (a lost race).
func txn(ctx context.Context, cli *api.Client, ops api.TxnOps) (bool, uint64, error) {
	ok, resp, meta, err := cli.Txn().Txn(ops, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return false, 0, wrapErr(ctx, "transaction", err)
	}
	if !ok {
		return false, 0, nil
	}
	var idx uint64
	for _, r := range resp.Results {
		if r.KV != nil && r.KV.ModifyIndex > idx {
			idx = r.KV.ModifyIndex
		}
	}
	if meta != nil && meta.LastIndex > idx {
		idx = meta.LastIndex
	}
	return true, idx, nil
}

// semOp writes the semaphore only if it is unchanged since the read; index
// 0 means "only if it does not exist yet".
func semOp(key string, v *semaphore.Value, index uint64) (*api.TxnOp, error) {
	b, err := v.Marshal()
	if err != nil {
		return nil, err
	}
	return &api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVCAS, Key: key, Value: b, Index: index}}, nil
}

// Status returns the group's state.
func (l *Locker) Status(ctx context.Context, group string) (plugins.LockState, error) {
	if err := semaphore.ValidateName("group", group); err != nil {
		return plugins.LockState{}, err
	}
	var st plugins.LockState
	err := l.call(ctx, func(ctx context.Context, cli *api.Client, prefix string) error {
		s, err := l.read(ctx, cli, keysFor(prefix, group))
		st = s.State(group, s.index)
		return err
	})
	return st, err
}

// Acquire takes a slot with one transaction: CAS of the semaphore, the
// holder's metadata, removal of reclaimed holders, and a check that the
// freeze marker is still absent.
func (l *Locker) Acquire(ctx context.Context, req plugins.AcquireRequest) (plugins.AcquireResult, error) {
	now := req.Now
	if now.IsZero() {
		now = l.now()
	}
	var res plugins.AcquireResult
	err := l.call(ctx, func(ctx context.Context, cli *api.Client, prefix string) error {
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
				res = plugins.AcquireResult{State: s.State(req.Group, s.index)}
				return nil
			}
			var ops api.TxnOps
			if p.Sem != nil {
				op, err := semOp(k.sem, p.Sem, s.semIndex)
				if err != nil {
					return err
				}
				ops = append(ops, op)
			} else {
				ops = append(ops, &api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVCheckIndex, Key: k.sem, Index: s.semIndex}})
			}
			if p.CheckNotFrozen {
				ops = append(ops, &api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVCheckNotExists, Key: k.frozen}})
			}
			if p.Granted {
				b, err := json.Marshal(p.Holder)
				if err != nil {
					return err
				}
				ops = append(ops, &api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVSet, Key: k.holders + semaphore.EscapeSegment(p.Holder.ID), Value: b}})
			}
			for _, r := range p.Reclaimed {
				ev, err := json.Marshal(semaphore.Event{Time: now, Kind: "reclaim", Reason: semaphore.StaleReason(r, now), By: req.Holder.ID, Holder: r})
				if err != nil {
					return err
				}
				ops = append(ops,
					&api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVDelete, Key: k.holders + semaphore.EscapeSegment(r.ID)}},
					&api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVSet, Key: k.events + semaphore.EventSuffix(now, r.ID), Value: ev}})
			}
			ok, idx, err := txn(ctx, cli, ops)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			for _, r := range p.Reclaimed {
				l.log.Warn("reclaimed stale reboot slot", "group", req.Group, "holder", r.ID, "deadline", r.Deadline, "by", req.Holder.ID)
			}
			res = plugins.AcquireResult{Granted: p.Granted, State: p.Apply(s.Snapshot).State(req.Group, idx), Reclaimed: p.Reclaimed}
			return nil
		}
		return fmt.Errorf("consul: acquire in group %q: %w", req.Group, plugins.ErrConflict)
	})
	return res, err
}

// Release removes req.ID and its metadata.
func (l *Locker) Release(ctx context.Context, req plugins.ReleaseRequest) error {
	if err := semaphore.ValidateName("group", req.Group); err != nil {
		return err
	}
	if err := semaphore.ValidateName("holder id", req.ID); err != nil {
		return err
	}
	return l.call(ctx, func(ctx context.Context, cli *api.Client, prefix string) error {
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
			op, err := semOp(k.sem, sem, s.semIndex)
			if err != nil {
				return err
			}
			ok, _, err := txn(ctx, cli, api.TxnOps{op,
				{KV: &api.KVTxnOp{Verb: api.KVDelete, Key: k.holders + semaphore.EscapeSegment(req.ID)}}})
			if err != nil {
				return err
			}
			if ok {
				l.log.Info("released reboot slot", "group", req.Group, "holder", req.ID, "reason", req.Reason)
				return nil
			}
		}
		return fmt.Errorf("consul: release in group %q: %w", req.Group, plugins.ErrConflict)
	})
}

// SetSlots rewrites total_slots, creating the semaphore if needed.
func (l *Locker) SetSlots(ctx context.Context, group string, slots int) (plugins.LockState, error) {
	if err := semaphore.ValidateName("group", group); err != nil {
		return plugins.LockState{}, err
	}
	if slots < 0 {
		return plugins.LockState{}, fmt.Errorf("%w: slot count %d is negative", plugins.ErrInvalidArgument, slots)
	}
	var st plugins.LockState
	err := l.call(ctx, func(ctx context.Context, cli *api.Client, prefix string) error {
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
			op, err := semOp(k.sem, sem, s.semIndex)
			if err != nil {
				return err
			}
			ok, idx, err := txn(ctx, cli, api.TxnOps{op})
			if err != nil {
				return err
			}
			if ok {
				s.Sem = sem
				st = s.State(group, idx)
				return nil
			}
		}
		return fmt.Errorf("consul: set slots of group %q: %w", group, plugins.ErrConflict)
	})
	return st, err
}

// Freeze writes the freeze marker.
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
	return l.call(ctx, func(ctx context.Context, cli *api.Client, prefix string) error {
		_, err := cli.KV().Put(&api.KVPair{Key: keysFor(prefix, req.Group).frozen, Value: b}, (&api.WriteOptions{}).WithContext(ctx))
		if err != nil {
			return wrapErr(ctx, "freeze", err)
		}
		l.log.Warn("group frozen", "group", req.Group, "reason", req.Reason, "by", req.By)
		return nil
	})
}

// Thaw deletes the freeze marker.
func (l *Locker) Thaw(ctx context.Context, group string) error {
	if err := semaphore.ValidateName("group", group); err != nil {
		return err
	}
	return l.call(ctx, func(ctx context.Context, cli *api.Client, prefix string) error {
		if _, err := cli.KV().Delete(keysFor(prefix, group).frozen, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
			return wrapErr(ctx, "thaw", err)
		}
		l.log.Info("group thawed", "group", group)
		return nil
	})
}

// Wait issues blocking queries on the group's prefix until its index moves
// past revision. Revision 0 returns the current state at once.
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
	for {
		q := (&api.QueryOptions{WaitIndex: revision, WaitTime: maxBlock}).WithContext(ctx)
		pairs, meta, err := cli.KV().List(k.group, q)
		if ctx.Err() != nil {
			return plugins.LockState{}, ctx.Err()
		}
		if err != nil {
			return plugins.LockState{}, wrapErr(ctx, "wait", err)
		}
		// A blocking query may return with the index unchanged (timeout);
		// an index that went backwards means the store was reset.
		if meta.LastIndex == revision {
			continue
		}
		s, err := decode(k, pairs, meta.LastIndex)
		if err != nil {
			return plugins.LockState{}, err
		}
		return s.State(group, s.index), nil
	}
}

// wrapErr classifies an API error: transport failures and 5xx become
// ErrUnavailable; ACL and other 4xx stay plain errors.
func wrapErr(ctx context.Context, op string, err error) error {
	if errors.Is(ctx.Err(), context.Canceled) {
		return fmt.Errorf("consul: %s: %w", op, ctx.Err())
	}
	var se api.StatusError
	if errors.As(err, &se) {
		if se.Code >= 500 {
			return fmt.Errorf("consul: %s: %w: %w", op, plugins.ErrUnavailable, err)
		}
		return fmt.Errorf("consul: %s: %w", op, err)
	}
	var ue *url.Error
	var ne net.Error
	if errors.As(err, &ue) || errors.As(err, &ne) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("consul: %s: %w: %w", op, plugins.ErrUnavailable, err)
	}
	// The client reports non-2xx replies as "Unexpected response code: N (…)".
	if msg := err.Error(); strings.Contains(msg, "Unexpected response code: 5") {
		return fmt.Errorf("consul: %s: %w: %w", op, plugins.ErrUnavailable, err)
	}
	return fmt.Errorf("consul: %s: %w", op, err)
}
