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
//	<prefix>/groups/G/frozen            {"reason":…,"by":…,"at":…,"saved_total_slots":N}
//	<prefix>/groups/G/events/<ns>-<id>  reclaim history
//
// LockState.Revision is the X-Consul-Index of the group's key prefix; Wait
// is a blocking query on that prefix. The slot operations themselves are
// lockers/semaphore's, shared with the etcd locker.
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
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/offpeak/offpeak/internal/redact"
	"github.com/offpeak/offpeak/internal/registry"
	"github.com/offpeak/offpeak/lockers/semaphore"
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

// SecretKeys lists the settings `policy show` must not print.
func (Config) SecretKeys() []string { return []string{"token"} }

// Locker implements plugins.Locker on Consul KV. Status, Acquire, Release,
// SetSlots, Freeze and Thaw are the semaphore engine's, on this locker's
// store; Configure and Wait are its own.
type Locker struct {
	semaphore.Ops

	log   *slog.Logger
	block time.Duration // maxBlock; shorter in tests

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
	l := &Locker{log: log, block: maxBlock}
	l.Ops = semaphore.Ops{Name: "consul", Log: log, Now: time.Now, Open: l.open}
	return l
}

// Module registers the consul locker with offpeak's built-ins.
func Module() registry.Module[plugins.Locker] {
	return registry.Module[plugins.Locker]{Name: "consul", Config: func() any { return &Config{} }, New: registry.Logged(New)}
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
	// A port that is not a number (user:pass@host parses as host "user",
	// port "pass@host") would end up in request URLs and their errors.
	if host, port, err := net.SplitHostPort(cfg.Address); err != nil || host == "" || strings.ContainsAny(host, "@/") || !validPort(port) {
		return fmt.Errorf("%w: consul address %q must be host:port", plugins.ErrInvalidArgument, redact.String(cfg.Address))
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
	l.log.Debug("consul locker configured", "address", redact.String(cfg.Address), "scheme", cfg.Scheme,
		"prefix", cfg.Prefix, "client_cert", cfg.CertFile != "", "token", cfg.Token != "")
	return nil
}

func (l *Locker) client() (*api.Client, string, time.Duration, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cli == nil {
		return nil, "", 0, fmt.Errorf("%w: consul locker used before Configure", plugins.ErrInvalidArgument)
	}
	return l.cli, l.prefix, l.timeout, nil
}

// store is one group's keys on a client: the Consul locker's
// semaphore.Store. Every key of the group, the semaphore included, is under
// prefix, so one blocking query on prefix sees every change.
type store struct {
	cli    *api.Client
	prefix string // <prefix>/groups/G/; records at prefix + semaphore.HolderKey(id) and so on
	sem    string // prefix + "semaphore"
}

func newStore(cli *api.Client, prefix, name string) store {
	g := prefix + "/groups/" + semaphore.EscapeSegment(name) + "/"
	return store{cli: cli, prefix: g, sem: g + "semaphore"}
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

// decode builds a snapshot from the pairs under the group's prefix.
func (g store) decode(pairs api.KVPairs, index uint64) (semaphore.Snapshot, error) {
	s := semaphore.Snapshot{Revision: index}
	for _, p := range pairs {
		var err error
		if p.Key == g.sem {
			err = s.SetSem(p.Value, p.ModifyIndex)
		} else if rel, ok := strings.CutPrefix(p.Key, g.prefix); ok {
			err = s.AddRecord(rel, p.Value, p.ModifyIndex)
		}
		if err != nil {
			return semaphore.Snapshot{}, fmt.Errorf("consul: key %s: %w", p.Key, err)
		}
	}
	return s, nil
}

// Read lists the group's prefix with a consistent read.
func (g store) Read(ctx context.Context) (semaphore.Snapshot, error) {
	q := (&api.QueryOptions{RequireConsistent: true}).WithContext(ctx)
	pairs, meta, err := g.cli.KV().List(g.prefix, q)
	if err != nil {
		return semaphore.Snapshot{}, wrapErr(ctx, "read", err)
	}
	return g.decode(pairs, meta.LastIndex)
}

// Commit runs w as one Consul transaction. The semaphore is written with
// cas on the ModifyIndex that was read (index 0: only if still absent); a
// guarded write that leaves it alone checks that index instead.
func (g store) Commit(ctx context.Context, w semaphore.Write) (bool, uint64, *semaphore.Snapshot, error) {
	ops := make(api.TxnOps, 0, len(w.Ops)+2)
	kv := func(op api.KVTxnOp) { ops = append(ops, &api.TxnOp{KV: &op}) }
	switch {
	case w.Sem != nil && w.Guarded:
		kv(api.KVTxnOp{Verb: api.KVCAS, Key: g.sem, Value: w.Sem, Index: w.Version})
	case w.Sem != nil:
		kv(api.KVTxnOp{Verb: api.KVSet, Key: g.sem, Value: w.Sem})
	case w.Guarded && w.Version == 0:
		kv(api.KVTxnOp{Verb: api.KVCheckNotExists, Key: g.sem})
	case w.Guarded:
		kv(api.KVTxnOp{Verb: api.KVCheckIndex, Key: g.sem, Index: w.Version})
	}
	switch {
	case w.Guarded && w.GuardFrozen && w.FrozenVersion == 0:
		kv(api.KVTxnOp{Verb: api.KVCheckNotExists, Key: g.prefix + semaphore.FrozenKey})
	case w.Guarded && w.GuardFrozen:
		kv(api.KVTxnOp{Verb: api.KVCheckIndex, Key: g.prefix + semaphore.FrozenKey, Index: w.FrozenVersion})
	}
	for _, op := range w.Ops {
		if op.Delete {
			kv(api.KVTxnOp{Verb: api.KVDelete, Key: g.prefix + op.Key})
		} else {
			kv(api.KVTxnOp{Verb: api.KVSet, Key: g.prefix + op.Key, Value: op.Value})
		}
	}
	ok, resp, meta, err := g.cli.Txn().Txn(ops, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return false, 0, nil, wrapErr(ctx, "transaction", err)
	}
	if !ok {
		return false, 0, nil, nil
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
	return true, idx, nil, nil
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
	g := newStore(cli, prefix, group)
	for {
		q := (&api.QueryOptions{WaitIndex: revision, WaitTime: l.block}).WithContext(ctx)
		pairs, meta, err := cli.KV().List(g.prefix, q)
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
		s, err := g.decode(pairs, meta.LastIndex)
		if err != nil {
			return plugins.LockState{}, err
		}
		return s.State(group), nil
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

func validPort(p string) bool {
	n, err := strconv.ParseUint(p, 10, 16)
	return err == nil && n > 0
}
