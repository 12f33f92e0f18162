// Package pluginhost starts, supervises and talks to offpeak plugins: the
// third-party binaries installed as offpeak-plugin-<name> and the built-in
// lockers and checks, which run as the offpeak binary re-executed with
// `plugin serve KIND NAME`. Plugins start on first use, are restarted with
// exponential backoff after a crash, and every failure to get an answer is
// an error (fail closed).
package pluginhost

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-plugin"

	"github.com/offpeak/offpeak/internal/safepath"
	"github.com/offpeak/offpeak/plugins"
)

// Backoff bounds the delay before restarting a plugin that failed: Min after
// the first failure, doubling with each consecutive one, at most Max.
type Backoff struct {
	Min, Max time.Duration
}

// delay returns the wait after the n-th consecutive failure (n ≥ 1).
func (b Backoff) delay(n int) time.Duration {
	d := b.Min
	for i := 1; i < n && d < b.Max; i++ {
		d *= 2
	}
	return min(d, b.Max)
}

// Options configure a Manager. Zero values get the defaults noted.
type Options struct {
	// Dirs are searched for offpeak-plugin-<name> executables, in order; a
	// later dir overrides an earlier one (paths.Layout.PluginDirs()).
	Dirs []string
	// Exe is the offpeak binary, re-executed to serve built-ins.
	Exe string
	// Builtins names the plugins Exe serves, by kind. A built-in name wins
	// over an installed binary of the same name.
	Builtins map[plugins.Kind][]string
	// Pins maps a plugin name to the hex SHA-256 its binary must have. For
	// a built-in the pin applies to Exe.
	Pins map[string]string
	// Env is added to the plugin's environment (after offpeak's own).
	Env    []string
	Logger *slog.Logger // default: discard
	// CallTimeout bounds a call whose context has no deadline (default
	// 30s). Locker.Wait is exempt: it blocks until its context ends.
	CallTimeout time.Duration
	// StartTimeout bounds the handshake of a starting plugin (default 10s).
	StartTimeout time.Duration
	// Now is the clock for restart backoff decisions (default time.Now).
	Now     func() time.Time
	Backoff Backoff // default 1s..5m
}

// Manager owns the plugin processes. Handles it returns are safe for
// concurrent use; Close stops every process.
type Manager struct {
	opts Options
	log  *slog.Logger

	mu       sync.Mutex
	closed   bool
	handles  map[string]*handle
	restarts map[string]int
	live     map[*proc]struct{}
}

// New returns a Manager; no plugin starts until a handle is first called.
func New(opts Options) *Manager {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.CallTimeout <= 0 {
		opts.CallTimeout = 30 * time.Second
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 10 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Backoff.Min <= 0 {
		opts.Backoff.Min = time.Second
	}
	if opts.Backoff.Max < opts.Backoff.Min {
		opts.Backoff.Max = max(5*time.Minute, opts.Backoff.Min)
	}
	return &Manager{
		opts:     opts,
		log:      opts.Logger,
		handles:  map[string]*handle{},
		restarts: map[string]int{},
		live:     map[*proc]struct{}{},
	}
}

// target is how to run one plugin.
type target struct {
	name    string
	path    string
	args    []string
	builtin bool
	pin     []byte // nil: not pinned
}

func (m *Manager) isBuiltin(kind plugins.Kind, name string) bool {
	return slices.Contains(m.opts.Builtins[kind], name)
}

func (m *Manager) pin(name string) ([]byte, error) {
	p, ok := m.opts.Pins[name]
	if !ok {
		return nil, nil
	}
	return parsePin(name, p)
}

// resolve finds what serves kind/name: a built-in, else an installed binary.
func (m *Manager) resolve(kind plugins.Kind, name string) (target, error) {
	if name == "" {
		return target{}, fmt.Errorf("%w: empty plugin name", ErrNotFound)
	}
	pin, err := m.pin(name)
	if err != nil {
		return target{}, err
	}
	if m.isBuiltin(kind, name) {
		if m.opts.Exe == "" {
			return target{}, fmt.Errorf("built-in %s %q: no offpeak binary to run it", kind, name)
		}
		return target{name: name, path: m.opts.Exe, args: []string{"plugin", "serve", string(kind), name}, builtin: true, pin: pin}, nil
	}
	d := discover(m.opts.Dirs)
	for _, p := range d.problems {
		m.log.Warn("plugin discovery", "error", p)
	}
	for _, r := range d.refused {
		m.log.Warn("plugin discovery", "error", r.err)
	}
	if in, ok := d.found[name]; ok {
		return target{name: name, path: in.path, pin: pin}, nil
	}
	if r, ok := d.refused[name]; ok {
		return target{}, fmt.Errorf("%s %w", kind, r.err)
	}
	builtins := slices.Clone(m.opts.Builtins[kind])
	sort.Strings(builtins)
	return target{}, fmt.Errorf("%w: no %s plugin named %q (built-in %ss: %s; installed in %s: %s)",
		ErrNotFound, kind, name, kind, listOrNone(builtins),
		strings.Join(m.opts.Dirs, ", "), listOrNone(sortedNames(d.found)))
}

func listOrNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

// Locker returns a handle for the locker plugin name. The plugin starts on
// the handle's first call; after every (re)start it is sent config (and any
// later value given to the handle's Configure) before anything else.
// Asking again for the same name returns the same handle with the new config.
func (m *Manager) Locker(name string, config json.RawMessage) (plugins.Locker, error) {
	if err := validJSON(config); err != nil {
		return nil, err
	}
	h, err := m.handle(plugins.KindLocker, name)
	if err != nil {
		return nil, err
	}
	h.setConfig(config)
	return &lockerHandle{h: h}, nil
}

// Check returns a handle for the health check plugin name; it starts on the
// first Check.
func (m *Manager) Check(name string) (plugins.HealthCheck, error) {
	h, err := m.handle(plugins.KindCheck, name)
	if err != nil {
		return nil, err
	}
	return &checkHandle{h: h}, nil
}

func validJSON(config json.RawMessage) error {
	if len(config) > 0 && !json.Valid(config) {
		return fmt.Errorf("%w: plugin config is not valid JSON", plugins.ErrInvalidArgument)
	}
	return nil
}

func (m *Manager) handle(kind plugins.Kind, name string) (*handle, error) {
	tgt, err := m.resolve(kind, name)
	if err != nil {
		return nil, err
	}
	key := string(kind) + "/" + name
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	if h, ok := m.handles[key]; ok {
		return h, nil
	}
	h := &handle{m: m, kind: kind, tgt: tgt}
	m.handles[key] = h
	return h, nil
}

// Restarts returns how many times each plugin (by name) was started again
// after its first start, for metrics.
func (m *Manager) Restarts() map[string]int {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]int, len(m.restarts))
	for k, v := range m.restarts {
		out[k] = v
	}
	return out
}

// Close stops every plugin process (politely, then by SIGKILL) and makes
// every handle return ErrClosed.
func (m *Manager) Close() error {
	m.mu.Lock()
	m.closed = true
	procs := make([]*proc, 0, len(m.live))
	for p := range m.live {
		procs = append(procs, p)
	}
	clear(m.live)
	m.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Go(func() { p.stop(false) })
	}
	wg.Wait()
	return nil
}

func (m *Manager) track(p *proc) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	m.live[p] = struct{}{}
	return nil
}

func (m *Manager) untrack(p *proc) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.live, p)
}

func (m *Manager) isClosed() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.closed
}

// proc is one running plugin process.
type proc struct {
	client *plugin.Client
	cmd    *exec.Cmd
	pid    int
	info   plugins.Info
	impl   any // plugins.Locker or plugins.HealthCheck
	cfgGen int // config generation sent to this process; -1 none yet
}

// stop ends the process: hard kills at once (a crashed or wedged plugin),
// otherwise go-plugin asks it to exit and kills it after a grace period.
func (p *proc) stop(hard bool) {
	if hard && p.cmd.Process != nil {
		_ = p.cmd.Process.Kill()
	}
	p.client.Kill()
}

// startProc runs tgt, completes the handshake and asks the plugin who it
// is. kind "" accepts whatever the plugin serves.
func (m *Manager) startProc(ctx context.Context, tgt target, kind plugins.Kind) (*proc, error) {
	if m.isClosed() {
		return nil, ErrClosed
	}
	if !tgt.builtin {
		// Again at every start: the file may have changed since discovery.
		if err := safepath.Check(tgt.path); err != nil {
			return nil, fmt.Errorf("plugin %s refused: %w", tgt.path, err)
		}
	}
	cmd := exec.Command(tgt.path, tgt.args...)
	cmd.Env = append(os.Environ(), m.opts.Env...)
	setParentDeath(cmd)
	var secure *plugin.SecureConfig
	if tgt.pin != nil {
		// Hash is stateful: one per start.
		secure = &plugin.SecureConfig{Checksum: tgt.pin, Hash: sha256.New()}
	}
	log := m.log.With("plugin", tgt.name)
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  plugins.Handshake,
		VersionedPlugins: plugins.HostPluginSets(),
		Cmd:              cmd,
		SecureConfig:     secure,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		AutoMTLS:         true,
		StartTimeout:     m.opts.StartTimeout,
		Logger:           newHCLogBridge(log, tgt.path),
		// The environment is built above so that Env can override it.
		SkipHostEnv: true,
		// Raw stderr is already parsed and logged through Logger; output
		// written after the handshake arrives here.
		SyncStdout: &lineLogger{log: log, stream: "stdout"},
		SyncStderr: &lineLogger{log: log, stream: "stderr"},
		// Not Managed: go-plugin's managed list is package-global and never
		// shrinks; this Manager keeps its own list and Close kills it.
	})
	if _, err := client.Start(); err != nil {
		// go-plugin has already killed and reaped a process that failed
		// the handshake.
		return nil, m.startError(tgt, err)
	}
	p := &proc{client: client, cmd: cmd, pid: cmd.Process.Pid, cfgGen: -1}
	if err := m.track(p); err != nil {
		p.stop(true)
		return nil, err
	}
	fail := func(err error) (*proc, error) {
		m.untrack(p)
		p.stop(true)
		return nil, err
	}
	rpc, err := client.Client()
	if err != nil {
		return fail(fmt.Errorf("%w: connecting to %s: %w", ErrHandshake, tgt.path, err))
	}
	raw, err := rpc.Dispense(plugins.DispenseInfo)
	if err != nil {
		return fail(fmt.Errorf("%w: %w", ErrHandshake, err))
	}
	info, err := raw.(plugins.Describer).Describe(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return fail(fmt.Errorf("Info.Describe: %w", err))
		}
		return fail(fmt.Errorf("%w: Info.Describe: %w", ErrHandshake, err))
	}
	p.info = info
	if kind != "" {
		if !info.Serves(kind) {
			return fail(fmt.Errorf("%w: %s serves %v, not a %s", ErrWrongKind, tgt.path, info.Kinds, kind))
		}
		if p.impl, err = rpc.Dispense(string(kind)); err != nil {
			return fail(fmt.Errorf("%w: %w", ErrHandshake, err))
		}
	}
	log.Debug("plugin started", "path", tgt.path, "pid", p.pid, "version", info.Version)
	return p, nil
}

// startError turns go-plugin's start failures, which are plain strings,
// into errors that name the plugin's problem and wrap a sentinel.
func (m *Manager) startError(tgt target, err error) error {
	msg := err.Error()
	first, _, _ := strings.Cut(msg, "\n")
	switch {
	case errors.Is(err, plugin.ErrChecksumsDoNotMatch):
		got, herr := fileSHA256(tgt.path)
		if herr != nil {
			got = "unreadable (" + herr.Error() + ")"
		}
		return fmt.Errorf("%w: %s has sha256 %s, pinned %s", ErrChecksumMismatch, tgt.path, got, hex.EncodeToString(tgt.pin))
	case strings.HasPrefix(msg, "error verifying checksum"):
		return fmt.Errorf("%w: cannot hash %s: %s", ErrChecksumMismatch, tgt.path, msg)
	case strings.Contains(msg, "incompatible API version"):
		v := "another version"
		if _, after, ok := strings.Cut(msg, "Plugin version: "); ok {
			v, _, _ = strings.Cut(after, ",")
			v = "version " + v
		}
		return fmt.Errorf("%w: %s speaks plugin protocol %s, offpeak speaks version %d (rebuild it against a matching offpeak plugins SDK)",
			ErrHandshake, tgt.path, v, plugins.ProtocolVersion)
	case strings.Contains(msg, "incompatible core API version"):
		return fmt.Errorf("%w: %s uses an incompatible go-plugin core protocol: %s", ErrHandshake, tgt.path, first)
	case strings.HasPrefix(msg, "Unrecognized remote plugin message: "):
		line := strings.TrimPrefix(first, "Unrecognized remote plugin message: ")
		if line == "" {
			return fmt.Errorf("%w: %s exited or closed stdout before the handshake (run by hand, an offpeak plugin says why on stderr)", ErrHandshake, tgt.path)
		}
		return fmt.Errorf("%w: %s wrote %q to stdout instead of the handshake (a plugin must not print to stdout before plugins.Serve)", ErrHandshake, tgt.path, line)
	case strings.Contains(msg, "plugin exited before we could connect"):
		return fmt.Errorf("%w: %s exited before the handshake (run by hand, an offpeak plugin says why on stderr)", ErrHandshake, tgt.path)
	case strings.Contains(msg, "timeout while waiting for plugin to start"):
		return fmt.Errorf("%w: %s gave no handshake within %s", ErrHandshake, tgt.path, m.opts.StartTimeout)
	case strings.Contains(msg, "unsupported plugin protocol"):
		return fmt.Errorf("%w: %s does not speak gRPC (%s)", ErrHandshake, tgt.path, first)
	}
	return fmt.Errorf("starting %s: %w", tgt.path, err)
}

// handle is the supervised connection to one plugin for one kind.
type handle struct {
	m    *Manager
	kind plugins.Kind
	tgt  target

	mu       sync.Mutex
	cur      *proc
	config   json.RawMessage
	cfgGen   int
	starts   int
	failures int // consecutive
	retryAt  time.Time
	lastErr  error
}

func (h *handle) setConfig(config json.RawMessage) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.config = slices.Clone(config)
	h.cfgGen++
}

// errorf prefixes an error with the plugin's name and kind.
func (h *handle) errorf(format string, args ...any) error {
	return fmt.Errorf("plugin %q (%s): "+format, append([]any{h.tgt.name, h.kind}, args...)...)
}

// failLocked records a failure and schedules the next start.
func (h *handle) failLocked(err error) time.Duration {
	h.failures++
	h.lastErr = err
	d := h.m.opts.Backoff.delay(h.failures)
	h.retryAt = h.m.opts.Now().Add(d)
	return d
}

// acquire returns the running process, starting it if it is not running
// and its backoff has passed, and sends it the current config if it has
// not seen it yet.
func (h *handle) acquire(ctx context.Context) (*proc, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m.isClosed() {
		return nil, h.errorf("%w", ErrClosed)
	}
	if p := h.cur; p != nil && p.client.Exited() {
		h.cur = nil
		h.m.untrack(p)
		p.stop(true)
		d := h.failLocked(fmt.Errorf("process %d exited", p.pid))
		h.m.log.Warn("plugin exited", "plugin", h.tgt.name, "kind", h.kind, "pid", p.pid, "restart_in", d)
	}
	if h.cur == nil {
		if h.failures > 0 {
			if wait := h.retryAt.Sub(h.m.opts.Now()); wait > 0 {
				return nil, h.errorf("%w: not restarting for another %s (failure %d): %w",
					ErrPluginDown, wait.Round(time.Millisecond), h.failures, h.lastErr)
			}
		}
		p, err := h.m.startProc(ctx, h.tgt, h.kind)
		if err != nil {
			if errors.Is(err, ErrClosed) {
				return nil, h.errorf("%w", err)
			}
			if ctx.Err() != nil {
				// The caller's context ended while the plugin was starting;
				// that is no fault of the plugin, so no backoff.
				return nil, h.wrapCallErr(ctx, "starting", err)
			}
			d := h.failLocked(err)
			h.m.log.Error("plugin failed to start", "plugin", h.tgt.name, "kind", h.kind, "error", err, "restart_in", d)
			return nil, h.errorf("%w: %w", ErrPluginDown, err)
		}
		if h.starts > 0 {
			h.m.mu.Lock()
			h.m.restarts[h.tgt.name]++
			h.m.mu.Unlock()
		}
		h.starts++
		h.cur = p
	}
	p := h.cur
	if h.kind == plugins.KindLocker && p.cfgGen != h.cfgGen {
		err := p.impl.(plugins.Locker).Configure(ctx, h.config)
		if err != nil {
			if errors.Is(err, plugins.ErrTransport) {
				h.cur = nil
				h.m.untrack(p)
				p.stop(true)
				h.failLocked(err)
				return nil, h.errorf("%w: Locker.Configure: %w", ErrPluginDown, err)
			}
			return nil, h.wrapCallErr(ctx, "Locker.Configure", err)
		}
		p.cfgGen = h.cfgGen
	}
	return p, nil
}

// finish classifies the outcome of a call on p.
func (h *handle) finish(ctx context.Context, method string, p *proc, err error) error {
	if err == nil {
		h.mu.Lock()
		if h.cur == p {
			h.failures = 0
		}
		h.mu.Unlock()
		return nil
	}
	if errors.Is(err, plugins.ErrTransport) {
		if h.m.isClosed() {
			// Close stopped the process under this call.
			return h.errorf("%s: %w: %w", method, ErrClosed, err)
		}
		h.mu.Lock()
		var d time.Duration
		if h.cur == p {
			h.cur = nil
			d = h.failLocked(err)
		}
		h.mu.Unlock()
		h.m.untrack(p)
		p.stop(true)
		h.m.log.Warn("plugin crashed", "plugin", h.tgt.name, "kind", h.kind, "pid", p.pid, "call", method, "error", err, "restart_in", d)
		return h.errorf("%s: %w: process died or connection lost: %w", method, ErrPluginDown, err)
	}
	return h.wrapCallErr(ctx, method, err)
}

func (h *handle) wrapCallErr(ctx context.Context, method string, err error) error {
	// The plugin's side may notice the deadline first (it gets it over the
	// wire), so the answer can say "deadline exceeded" before ctx does.
	if errors.Is(ctx.Err(), context.DeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
		return h.errorf("%s: %w: %w", method, ErrTimeout, err)
	}
	if errors.Is(err, ErrBadAnswer) {
		h.m.log.Warn("plugin gave an invalid answer", "plugin", h.tgt.name, "kind", h.kind, "call", method, "error", err)
	}
	return h.errorf("%s: %w", method, err)
}

// call runs fn against the plugin under the default deadline.
func (h *handle) call(ctx context.Context, method string, fn func(ctx context.Context, p *proc) error) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, h.m.opts.CallTimeout)
		defer cancel()
	}
	return h.callNoTimeout(ctx, method, fn)
}

func (h *handle) callNoTimeout(ctx context.Context, method string, fn func(ctx context.Context, p *proc) error) error {
	p, err := h.acquire(ctx)
	if err != nil {
		return err
	}
	return h.finish(ctx, method, p, fn(ctx, p))
}

// lockerHandle is the plugins.Locker the Manager hands out.
type lockerHandle struct{ h *handle }

var _ plugins.Locker = (*lockerHandle)(nil)

func locker(p *proc) plugins.Locker { return p.impl.(plugins.Locker) }

// Configure replaces the config. A running plugin gets it at once; one not
// yet started gets it when it starts (so configuring starts no process).
func (l *lockerHandle) Configure(ctx context.Context, config json.RawMessage) error {
	if err := validJSON(config); err != nil {
		return l.h.errorf("Locker.Configure: %w", err)
	}
	l.h.setConfig(config)
	l.h.mu.Lock()
	running := l.h.cur != nil
	l.h.mu.Unlock()
	if !running {
		return nil
	}
	return l.h.call(ctx, "Locker.Configure", func(context.Context, *proc) error { return nil })
}

func (l *lockerHandle) Acquire(ctx context.Context, req plugins.AcquireRequest) (res plugins.AcquireResult, err error) {
	err = l.h.call(ctx, "Locker.Acquire", func(ctx context.Context, p *proc) error {
		res, err = locker(p).Acquire(ctx, req)
		return err
	})
	return res, err
}

func (l *lockerHandle) Release(ctx context.Context, req plugins.ReleaseRequest) error {
	return l.h.call(ctx, "Locker.Release", func(ctx context.Context, p *proc) error {
		return locker(p).Release(ctx, req)
	})
}

func (l *lockerHandle) Status(ctx context.Context, group string) (st plugins.LockState, err error) {
	err = l.h.call(ctx, "Locker.Status", func(ctx context.Context, p *proc) error {
		st, err = locker(p).Status(ctx, group)
		return err
	})
	return st, err
}

// Wait is not given the default deadline: it blocks until ctx ends.
func (l *lockerHandle) Wait(ctx context.Context, group string, revision uint64) (st plugins.LockState, err error) {
	err = l.h.callNoTimeout(ctx, "Locker.Wait", func(ctx context.Context, p *proc) error {
		st, err = locker(p).Wait(ctx, group, revision)
		return err
	})
	return st, err
}

func (l *lockerHandle) SetSlots(ctx context.Context, group string, slots int) (st plugins.LockState, err error) {
	err = l.h.call(ctx, "Locker.SetSlots", func(ctx context.Context, p *proc) error {
		st, err = locker(p).SetSlots(ctx, group, slots)
		return err
	})
	return st, err
}

func (l *lockerHandle) Freeze(ctx context.Context, req plugins.FreezeRequest) error {
	return l.h.call(ctx, "Locker.Freeze", func(ctx context.Context, p *proc) error {
		return locker(p).Freeze(ctx, req)
	})
}

func (l *lockerHandle) Thaw(ctx context.Context, group string) error {
	return l.h.call(ctx, "Locker.Thaw", func(ctx context.Context, p *proc) error {
		return locker(p).Thaw(ctx, group)
	})
}

// checkHandle is the plugins.HealthCheck the Manager hands out.
type checkHandle struct{ h *handle }

var _ plugins.HealthCheck = (*checkHandle)(nil)

func (c *checkHandle) Check(ctx context.Context, req plugins.CheckRequest) (res plugins.CheckResult, err error) {
	err = c.h.call(ctx, "HealthCheck.Check", func(ctx context.Context, p *proc) error {
		res, err = p.impl.(plugins.HealthCheck).Check(ctx, req)
		return err
	})
	return res, err
}
