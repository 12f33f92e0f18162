package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/godbus/dbus/v5"

	"github.com/offpeak/offpeak/installer"
	"github.com/offpeak/offpeak/internal/detect"
	"github.com/offpeak/offpeak/internal/installers"
	"github.com/offpeak/offpeak/internal/logind"
	"github.com/offpeak/offpeak/internal/notify"
	"github.com/offpeak/offpeak/internal/pluginhost"
	"github.com/offpeak/offpeak/internal/policy"
	"github.com/offpeak/offpeak/internal/reboot"
	"github.com/offpeak/offpeak/internal/state"
	"github.com/offpeak/offpeak/plugins"
	"github.com/offpeak/offpeak/scheduler"
	"github.com/offpeak/offpeak/strategies"
)

// runtime is an agent wired to its plugins, bus and files.
type runtime struct {
	agent   *scheduler.Agent
	plugins *pluginhost.Manager
	pol     *policy.Policy
	closers []func()
}

func (rt *runtime) Close() {
	for i := len(rt.closers) - 1; i >= 0; i-- {
		rt.closers[i]()
	}
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
	rt := &runtime{pol: pol}
	id, host, err := a.nodeIdentity(pol)
	if err != nil {
		return nil, err
	}
	m, err := a.pluginManager(pol)
	if err != nil {
		return nil, err
	}
	rt.plugins = m
	rt.closers = append(rt.closers, func() { m.Close() })
	f.ops.WatchPlugins(m.Restarts)

	gates, err := strategies.Lookup(pol.Strategy)
	if err != nil {
		rt.Close()
		return nil, err
	}
	var locker scheduler.Locker
	if gates.Lock {
		cfg, err := a.lockerConfig(pol)
		if err != nil {
			rt.Close()
			return nil, err
		}
		l, err := m.Locker(pol.Lock.Plugin, cfg)
		if err != nil {
			rt.Close()
			return nil, err
		}
		locker = f.ops.WrapLocker(l)
	}

	inst, closeInst, err := a.installerBackend(ctx, pol)
	if err != nil {
		rt.Close()
		return nil, err
	}
	rt.closers = append(rt.closers, closeInst)
	det := &detect.Detector{Sources: pol.Detect, Layout: a.Layout()}
	if inst != nil {
		det.Installer = inst
	}

	// The scheduler waits for inhibitors and warns users itself, so that it
	// can look at the window again after each wait; the Rebooter only reboots.
	rb := &reboot.Rebooter{Log: a.Logger, IgnoreInhibitors: true}
	if !f.dryRun && pol.Reboot.Method == "logind" {
		if conn, err := dbus.ConnectSystemBus(); err == nil {
			rb.Logind = logind.New(conn)
			rt.closers = append(rt.closers, func() { conn.Close() })
		} else {
			a.Logger.Warn("system bus unreachable; rebooting will use systemctl", "err", err)
		}
	}
	var notifier scheduler.Notifier
	if pol.Notify.Webhook != "" {
		notifier = webhookNotifier{notify.New(notify.Config{URL: pol.Notify.Webhook, CAFile: a.Layout().Join(pol.Notify.CAFile),
			Timeout: pol.Notify.Timeout.D(), Headers: pol.Notify.Headers}, a.Logger)}
	}
	clock := f.clock
	if clock == nil {
		clock = scheduler.RealClock{}
	}
	rb.Clock = clock
	var rebooter scheduler.Rebooter = rb
	if a.Rebooter != nil {
		rebooter = a.Rebooter
	}
	opts := scheduler.Options{
		Policy: pol, NodeID: id, Hostname: host, BootID: a.bootID, Clock: clock,
		Locker: locker, Detector: det, Rebooter: rebooter, Notifier: notifier, Observer: f.observer,
		Store: state.File{Path: a.stateFile(f.dryRun)}, DryRun: f.dryRun, Logger: a.Logger,
		Checks: func(plugin string) (scheduler.HealthCheck, error) { return m.Check(plugin) },
	}
	if inst != nil {
		opts.Installer = inst
	}
	ag, err := scheduler.New(opts)
	if err != nil {
		rt.Close()
		return nil, err
	}
	rt.agent = ag
	return rt, nil
}

type webhookNotifier struct{ w *notify.Webhook }

func (n webhookNotifier) Notify(ctx context.Context, ev scheduler.Event) error {
	return n.w.Notify(ctx, notify.Event{Kind: notify.Kind(ev.Kind), Node: ev.Node, Group: ev.Group, Time: ev.Time, Reason: ev.Reason, Details: ev.Details})
}

// installerBackend builds the [installer] backend, or nil for "none".
func (a *App) installerBackend(ctx context.Context, pol *policy.Policy) (installer.Backend, func(), error) {
	return installers.New(ctx, pol.Installer.Backend, pol.Installer.Config, a.Layout(), a.Logger)
}
