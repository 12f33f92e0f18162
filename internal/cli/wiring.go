package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/godbus/dbus/v5"

	"github.com/offpeak/offpeak/installer"
	"github.com/offpeak/offpeak/internal/builtin"
	"github.com/offpeak/offpeak/internal/detect"
	"github.com/offpeak/offpeak/internal/logind"
	"github.com/offpeak/offpeak/internal/notify"
	"github.com/offpeak/offpeak/internal/pluginhost"
	"github.com/offpeak/offpeak/internal/reboot"
	"github.com/offpeak/offpeak/internal/registry"
	"github.com/offpeak/offpeak/internal/statefile"
	"github.com/offpeak/offpeak/plugins"
	"github.com/offpeak/offpeak/scheduler"
	"github.com/offpeak/offpeak/scheduler/policy"
	"github.com/offpeak/offpeak/strategies"
)

// runtime is an agent wired to its plugins, bus and files.
type runtime struct {
	agent *scheduler.Agent

	mu     sync.Mutex // guards parts and closed: a reload replaces the parts
	parts  *parts
	closed bool
}

// Close stops what the agent's current components run (plugin processes,
// bus connections).
func (rt *runtime) Close() {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	rt.closed = true
	rt.parts.close()
}

// parts are the components one policy configures, and how to stop them.
type parts struct {
	comp    scheduler.Components
	plugins *pluginhost.Manager
	closers []func()
}

func (p *parts) close() {
	for i := len(p.closers) - 1; i >= 0; i-- {
		p.closers[i]()
	}
	p.closers = nil
}

type agentFlags struct {
	policyPath string
	dryRun     bool
	clock      scheduler.Clock
	observer   scheduler.Observer
	ops        *opsRuntime // metrics for locker calls and plugin restarts; may be nil
}

// lockerConfig renders [lock.config] as JSON, filling the file locker's
// directory from the state directory when the policy leaves it out.
func (a *App) lockerConfig(pol *policy.Policy) (json.RawMessage, error) {
	cfg := map[string]any{}
	for k, v := range pol.Lock.Config {
		cfg[k] = v
	}
	if pol.Lock.Plugin == "file" {
		if d, ok := cfg["dir"].(string); !ok || d == "" {
			cfg["dir"] = a.Layout().LockDir()
		} else {
			cfg["dir"] = a.Layout().Join(d)
		}
	}
	return json.Marshal(cfg)
}

// openLocker returns the policy's locker served through the plugin path.
func (a *App) openLocker(ctx context.Context, policyPath string) (plugins.Locker, *policy.Policy, func(), error) {
	pol, err := a.LoadPolicy(policyPath)
	if err != nil {
		return nil, nil, nil, err
	}
	m, err := a.pluginManager(pol)
	if err != nil {
		return nil, nil, nil, err
	}
	cfg, err := a.lockerConfig(pol)
	if err != nil {
		m.Close()
		return nil, nil, nil, err
	}
	l, err := m.Locker(pol.Lock.Plugin, cfg)
	if err != nil {
		m.Close()
		return nil, nil, nil, err
	}
	return l, pol, func() { m.Close() }, nil
}

// nodeIdentity finds the node id (policy, then machine-id) and hostname.
// Under --root the machine id is read below the root only: the host's own
// id would make a trial tree take the host's slot.
func (a *App) nodeIdentity(pol *policy.Policy) (string, string, error) {
	host := pol.Node.Hostname
	if host == "" {
		host, _ = os.Hostname()
	}
	if pol.Node.ID != "" {
		return pol.Node.ID, host, nil
	}
	mid := a.Layout().MachineIDFile()
	if b, err := os.ReadFile(mid); err == nil && strings.TrimSpace(string(b)) != "" {
		return strings.TrimSpace(string(b)), host, nil
	}
	if host != "" {
		a.Logger.Warn("no node.id and no machine id; using the hostname as node id", "machine_id_file", mid, "hostname", host)
		return host, host, nil
	}
	return "", "", fmt.Errorf("%w: set [node] id in the policy", scheduler.ErrNoNodeID)
}

// bootID reads the kernel's boot id, below the root first so tests can
// simulate a reboot by rewriting it.
func (a *App) bootID() (string, error) {
	var lastErr error
	for _, p := range []string{a.Layout().BootIDFile(), "/proc/sys/kernel/random/boot_id"} {
		b, err := os.ReadFile(p)
		if err == nil {
			if id := strings.TrimSpace(string(b)); id != "" {
				return id, nil
			}
		}
		lastErr = err
	}
	return "", fmt.Errorf("boot id: %w", lastErr)
}

// stateFile is where the agent persists its state. A dry run keeps its own
// file so it can never disturb a real agent on the same host.
func (a *App) stateFile(dryRun bool) string {
	if dryRun {
		return filepath.Join(a.Layout().StateDir(), "state.dry-run.json")
	}
	return a.Layout().StateFile()
}

// buildAgent wires an agent for the policy.
func (a *App) buildAgent(ctx context.Context, pol *policy.Policy, f agentFlags) (*runtime, error) {
	p, err := a.buildParts(ctx, pol, f, a.stateHoldsSlot(f.dryRun))
	if err != nil {
		return nil, err
	}
	clock := f.clock
	if clock == nil {
		clock = scheduler.RealClock{}
	}
	c := p.comp
	opts := scheduler.Options{
		Policy: c.Policy, NodeID: c.NodeID, Hostname: c.Hostname, BootID: a.bootID, Clock: clock,
		Locker: c.Locker, Detector: c.Detector, Installer: c.Installer, Rebooter: c.Rebooter, Notifier: c.Notifier,
		Checks: c.Checks, Observer: f.observer, Store: statefile.File{Path: a.stateFile(f.dryRun)}, DryRun: f.dryRun, Logger: a.Logger,
	}
	ag, err := scheduler.New(opts)
	if err != nil {
		p.close()
		return nil, err
	}
	f.ops.WatchPlugins(p.plugins.Restarts)
	return &runtime{agent: ag, parts: p}, nil
}

// stateHoldsSlot reports whether the agent's state records a slot that may
// still be held.
func (a *App) stateHoldsSlot(dryRun bool) bool {
	var st scheduler.State
	if err := (statefile.File{Path: a.stateFile(dryRun)}).Load(&st); err != nil {
		return false // missing: none; corrupt: the agent refuses to start
	}
	return st.Slot != nil
}

// buildParts builds every component the policy configures: the node's
// identity, plugin host, locker, checks, installer, detector, rebooter and
// notifier. The locker is built for strategies that take a slot, and when
// holding is set, for any: a slot held must be given back where it lives.
func (a *App) buildParts(ctx context.Context, pol *policy.Policy, f agentFlags, holding bool) (*parts, error) {
	id, host, err := a.nodeIdentity(pol)
	if err != nil {
		return nil, err
	}
	m, err := a.pluginManager(pol)
	if err != nil {
		return nil, err
	}
	p := &parts{plugins: m}
	p.closers = append(p.closers, func() { m.Close() })
	fail := func(err error) (*parts, error) {
		p.close()
		return nil, err
	}

	gates, err := strategies.Lookup(pol.Strategy)
	if err != nil {
		return fail(err)
	}
	var locker scheduler.Locker
	if gates.Lock || holding {
		cfg, err := a.lockerConfig(pol)
		if err != nil {
			return fail(err)
		}
		l, err := m.Locker(pol.Lock.Plugin, cfg)
		if err != nil {
			return fail(err)
		}
		locker = f.ops.WrapLocker(l)
	}

	inst, closeInst, err := a.installerBackend(ctx, pol)
	if err != nil {
		return fail(err)
	}
	p.closers = append(p.closers, closeInst)
	det := &detect.Detector{Sources: pol.Detect, Layout: a.Layout()}
	if inst != nil {
		det.Installer = inst
	}

	// The scheduler waits for inhibitors and warns users itself, so that it
	// can look at the window again after each wait; the Rebooter only reboots.
	rb := &reboot.Rebooter{Log: a.Logger, IgnoreInhibitors: true}
	if !f.dryRun && pol.Reboot.Method == policy.RebootLogind {
		if conn, err := dbus.ConnectSystemBus(); err == nil {
			rb.Logind = logind.New(conn)
			p.closers = append(p.closers, func() { conn.Close() })
		} else {
			a.Logger.Warn("system bus unreachable; rebooting will use systemctl", "err", err)
		}
	}
	var notifier scheduler.Notifier
	if pol.Notify.Webhook != "" {
		notifier = webhookNotifier{notify.New(notify.Config{URL: pol.Notify.Webhook, CAFile: a.Layout().Join(pol.Notify.CAFile),
			Timeout: pol.Notify.Timeout.D(), Headers: pol.Notify.Headers}, a.Logger)}
	}
	if f.clock != nil {
		rb.Clock = f.clock
	}
	var rebooter scheduler.Rebooter = rb
	if a.Rebooter != nil {
		rebooter = a.Rebooter
	}
	p.comp = scheduler.Components{
		Policy: pol, NodeID: id, Hostname: host, Locker: locker, Detector: det, Rebooter: rebooter, Notifier: notifier,
		Checks: func(plugin string) (scheduler.HealthCheck, error) { return m.Check(plugin) },
	}
	if inst != nil {
		p.comp.Installer = inst
	}
	return p, nil
}

// reload builds every component of pol and puts them in force, closing the
// old ones; when the agent refuses them, the new ones are closed and the
// running ones stay.
func (a *App) reload(ctx context.Context, rt *runtime, pol *policy.Policy, f agentFlags) error {
	p, err := a.buildParts(ctx, pol, f, rt.agent.State().Slot != nil)
	if err != nil {
		return err
	}
	if err := rt.agent.Reload(p.comp); err != nil {
		p.close()
		return err
	}
	rt.mu.Lock()
	if rt.closed {
		// The agent stopped meanwhile: nothing may outlive it.
		rt.mu.Unlock()
		p.close()
		return errors.New("the agent is stopping")
	}
	old := rt.parts
	rt.parts = p
	rt.mu.Unlock()
	f.ops.WatchPlugins(p.plugins.Restarts)
	old.close()
	return nil
}

type webhookNotifier struct{ w *notify.Webhook }

func (n webhookNotifier) Notify(ctx context.Context, ev scheduler.Event) error {
	return n.w.Notify(ctx, notify.Event{Kind: notify.Kind(ev.Kind), Node: ev.Node, Group: ev.Group, Time: ev.Time, Reason: ev.Reason, Details: ev.Details})
}

// installerBackend builds the [installer] backend, or nil for "none". The
// func returned releases what the backend opened.
func (a *App) installerBackend(ctx context.Context, pol *policy.Policy) (installer.Backend, func(), error) {
	raw, err := json.Marshal(pol.Installer.Config)
	if err != nil {
		return nil, func() {}, err
	}
	name := pol.Installer.Backend
	if name == "" {
		name = "none"
	}
	env := registry.Env{Log: a.Logger, Root: a.Layout().Root, Join: a.Layout().Join, Config: raw}
	b, cleanup, ok, err := builtin.New().Installers.New(ctx, name, env)
	if !ok {
		return nil, cleanup, fmt.Errorf("unknown installer backend %q", name)
	}
	return b, cleanup, err
}
