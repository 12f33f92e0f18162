package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/offpeak/offpeak/internal/coordinator"
	"github.com/offpeak/offpeak/internal/metrics"
	"github.com/offpeak/offpeak/internal/sdnotify"
	"github.com/offpeak/offpeak/internal/statefile"
	"github.com/offpeak/offpeak/scheduler"
	"github.com/offpeak/offpeak/scheduler/policy"
)

// opsFlags are the agent's operational flags (metrics, systemd).
type opsFlags struct {
	metricsListen   string
	coordinatorConf string
}

// Values of --coordinator-conf.
const (
	coordinatorAuto = "auto"
	coordinatorOn   = "on"
	coordinatorOff  = "off"
)

func addOpsFlags(cmd *cobra.Command, f *opsFlags) {
	cmd.Flags().StringVar(&f.metricsListen, "metrics-listen", "", "serve Prometheus metrics at /metrics on ADDR (host:port or unix:/path); off by default")
	cmd.Flags().StringVar(&f.coordinatorConf, "coordinator-conf", coordinatorAuto,
		"maintain "+coordinator.Path+" for Flatcar's login banner: auto (when that directory exists), on or off")
}

// agentLockFile is held by the running agent, or by the post-boot gate
// while it runs the post-boot phase itself, so they never run a pass of the
// pipeline at the same time. It holds the holder's role and pid.
func (a *App) agentLockFile() string { return filepath.Join(a.Layout().RunDir(), "agent.lock") }

// Roles written into the agent lock.
const (
	roleAgent = "agent"
	roleGate  = "post-boot-gate"
	roleCheck = "check"
)

// lockHeldError means another process holds the agent lock.
type lockHeldError struct {
	path, role, pid string
}

func (e *lockHeldError) Error() string {
	if e.role == roleAgent {
		return fmt.Sprintf("another offpeak agent is running (pid %s holds %s)", e.pid, e.path)
	}
	return fmt.Sprintf("%s is held by %s (pid %s)", e.path, e.role, e.pid)
}

// tryAgentLock takes the agent lock for role without waiting; a
// *lockHeldError names the holder. When the run directory cannot be created
// (not root, read-only /run) it logs and returns a no-op: the lock guards
// against mistakes, it must not stop the agent.
func (a *App) tryAgentLock(role string) (release func(), err error) {
	path := a.agentLockFile()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		a.Logger.Warn("cannot create the run directory; running without the agent lock", "err", err)
		return func() {}, nil
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		a.Logger.Warn("cannot open the agent lock; running without it", "err", err)
		return func() {}, nil
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		defer f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			held := &lockHeldError{path: path, role: "unknown", pid: "unknown"}
			if b, rerr := io.ReadAll(f); rerr == nil {
				if fields := strings.Fields(string(b)); len(fields) == 2 {
					held.role, held.pid = fields[0], fields[1]
				}
			}
			return nil, held
		}
		return nil, fmt.Errorf("agent lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		fmt.Fprintf(f, "%s %d\n", role, os.Getpid())
	}
	return func() { f.Close() }, nil
}

// lockForCheck takes the agent lock for one `offpeak check` pass (not
// needed with --dry-run, which keeps its own state), so a timer-driven pass
// never runs beside the agent or the post-boot gate.
func (a *App) lockForCheck() (release func(), err error) {
	release, err = a.tryAgentLock(roleCheck)
	var held *lockHeldError
	if errors.As(err, &held) && held.role == roleAgent {
		return nil, fmt.Errorf("%w: it runs the pipeline itself (see `offpeak status`); use --dry-run to only look", err)
	}
	return release, err
}

// waitAgentLock takes the agent lock for the agent. While the post-boot
// gate holds it (timer mode's gate finishing the post-boot phase) it
// waits; another agent is an error.
func (a *App) waitAgentLock(ctx context.Context, poll time.Duration) (func(), error) {
	logged := false
	for {
		release, err := a.tryAgentLock(roleAgent)
		var held *lockHeldError
		if !errors.As(err, &held) || held.role == roleAgent {
			return release, err
		}
		if !logged {
			a.Logger.Info("waiting for the agent lock", "held_by", held.role, "pid", held.pid)
			logged = true
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %w", err, ctx.Err())
		case <-time.After(poll):
		}
	}
}

// opsRuntime is what runs beside the agent: sd_notify and its watchdog,
// the metrics server and coordinator.conf. A nil *opsRuntime is valid and
// does nothing, so callers without ops (offpeak check) need no branches.
type opsRuntime struct {
	app      *App
	notifier *sdnotify.Notifier
	metrics  *metrics.Metrics
	server   *metrics.Server
	coord    *coordinator.File

	observers []scheduler.Observer
	cancel    context.CancelFunc
	done      chan struct{}
	release   func()
	stopOnce  sync.Once
}

// startOps takes the agent lock and starts sd_notify's watchdog, the
// metrics server (with --metrics-listen) and coordinator.conf. The caller
// sends Ready once the agent is built and calls Stop on the way out.
func (a *App) startOps(ctx context.Context, pol *policy.Policy, f opsFlags) (*opsRuntime, error) {
	switch f.coordinatorConf {
	case "", coordinatorAuto, coordinatorOn, coordinatorOff:
	default:
		return nil, fmt.Errorf("--coordinator-conf must be auto, on or off, not %q", f.coordinatorConf)
	}
	release, err := a.waitAgentLock(ctx, time.Second)
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	o := &opsRuntime{app: a, release: release, cancel: cancel, done: make(chan struct{})}
	fail := func(err error) (*opsRuntime, error) {
		o.Stop()
		return nil, err
	}

	o.notifier = sdnotify.New(sdnotify.Options{Logger: a.Logger})
	go func() {
		defer close(o.done)
		if err := o.notifier.Watchdog(wctx); err != nil {
			a.Logger.Error("systemd watchdog disabled", "err", err)
		}
	}()

	if f.metricsListen != "" {
		o.metrics = metrics.New(a.Now)
		var st scheduler.State
		if err := (statefile.File{Path: a.stateFile(false)}).Load(&st); err == nil {
			o.metrics.Seed(st.Phase)
		}
		o.server, err = metrics.Serve(f.metricsListen, o.metrics.Handler(), a.Logger)
		if err != nil {
			return fail(fmt.Errorf("--metrics-listen %s: %w", f.metricsListen, err))
		}
		o.observers = append(o.observers, o.metrics)
		a.Logger.Info("serving metrics", "addr", o.server.Addr().String())
	}

	if coord, err := a.openCoordinator(pol, f.coordinatorConf); err != nil {
		return fail(err)
	} else if coord != nil {
		o.coord = coord
		o.observers = append(o.observers, coord)
	}
	// STATUS= last: once systemd shows a decision, the metrics and
	// coordinator.conf already reflect it.
	o.observers = append(o.observers, o.notifier)
	return o, nil
}

// openCoordinator opens coordinator.conf as --coordinator-conf says. Only
// another coordinator holding it is fatal: two reboot managers on one host
// would both reboot it.
func (a *App) openCoordinator(pol *policy.Policy, mode string) (*coordinator.File, error) {
	if mode == coordinatorOff {
		return nil, nil
	}
	path := a.Layout().Join(coordinator.Path)
	if mode != coordinatorOn {
		if _, err := os.Stat(filepath.Dir(path)); errors.Is(err, fs.ErrNotExist) {
			a.Logger.Debug("no update_engine runtime directory; not writing coordinator.conf", "dir", filepath.Dir(path))
			return nil, nil
		}
	}
	c, err := coordinator.Open(path, pol.Strategy)
	switch {
	case errors.Is(err, coordinator.ErrHeld):
		return nil, fmt.Errorf("%w: stop the other reboot manager first (e.g. `systemctl mask --now locksmithd`)", err)
	case err != nil:
		a.Logger.Warn("cannot maintain coordinator.conf", "err", err)
		return nil, nil
	}
	return c, nil
}

// Observer feeds every decision to the notifier, metrics and
// coordinator.conf.
func (o *opsRuntime) Observer() scheduler.Observer {
	if o == nil {
		return nil
	}
	return o
}

// Observe implements scheduler.Observer.
func (o *opsRuntime) Observe(r scheduler.Result) {
	for _, obs := range o.observers {
		obs.Observe(r)
	}
}

// Ready tells systemd the agent runs (READY=1). coordinator.conf leaves
// "starting" with the first decision.
func (o *opsRuntime) Ready(status string) {
	if o == nil {
		return
	}
	o.notifier.Ready(status)
}

// Reloading and Reloaded bracket a policy reload for systemd.
func (o *opsRuntime) Reloading() {
	if o != nil {
		o.notifier.Reloading()
	}
}

func (o *opsRuntime) Reloaded(status string) {
	if o != nil {
		o.notifier.Ready(status)
	}
}

// WrapLocker times the locker's calls for the metrics; without metrics it
// returns l unchanged.
func (o *opsRuntime) WrapLocker(l scheduler.Locker) scheduler.Locker {
	if o == nil || o.metrics == nil || l == nil {
		return l
	}
	return o.metrics.WrapLocker(l)
}

// WatchPlugins names the source of offpeak_plugin_restarts_total, e.g.
// (*pluginhost.Manager).Restarts.
func (o *opsRuntime) WatchPlugins(restarts func() map[string]int) {
	if o != nil && o.metrics != nil {
		o.metrics.SetPluginRestarts(restarts)
	}
}

// MetricsAddr is where metrics are served, "" when they are off.
func (o *opsRuntime) MetricsAddr() string {
	if o == nil || o.server == nil {
		return ""
	}
	return o.server.Addr().String()
}

// Stop says STOPPING=1, stops the watchdog and the metrics server, and
// releases coordinator.conf and the agent lock. It is idempotent.
func (o *opsRuntime) Stop() {
	if o == nil {
		return
	}
	o.stopOnce.Do(func() {
		if o.notifier != nil {
			o.notifier.Stopping()
		}
		o.cancel()
		if o.notifier != nil {
			<-o.done
		}
		if o.server != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := o.server.Close(ctx); err != nil {
				o.app.Logger.Warn("metrics server did not stop cleanly", "err", err)
			}
			cancel()
		}
		if o.coord != nil {
			o.coord.Close()
		}
		o.release()
	})
}
