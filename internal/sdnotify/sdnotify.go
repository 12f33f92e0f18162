// Package sdnotify tells systemd how the agent is doing: READY=1 once it
// runs, STATUS= with every decision, WATCHDOG=1 keep-alives and STOPPING=1
// on the way out. Without $NOTIFY_SOCKET every call is a no-op.
package sdnotify

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/offpeak/offpeak/scheduler"
)

// Ticker delivers watchdog ticks; *time.Ticker fits through NewTicker.
type Ticker interface {
	C() <-chan time.Time
	Stop()
}

// Options wire a Notifier; zero values use the real environment.
type Options struct {
	// Send delivers one notification and reports whether a service
	// manager listens; default daemon.SdNotify.
	Send func(state string) (bool, error)
	// WatchdogInterval returns systemd's watchdog timeout for this
	// process, 0 when disabled; default daemon.SdWatchdogEnabled.
	WatchdogInterval func() (time.Duration, error)
	// NewTicker makes the watchdog ticker; default a time.Ticker.
	NewTicker func(d time.Duration) Ticker
	Logger    *slog.Logger
}

// Notifier speaks the sd_notify protocol. It is a scheduler.Observer.
type Notifier struct {
	opts Options
}

// New returns a Notifier.
func New(o Options) *Notifier {
	if o.Send == nil {
		o.Send = func(state string) (bool, error) { return daemon.SdNotify(false, state) }
	}
	if o.WatchdogInterval == nil {
		o.WatchdogInterval = func() (time.Duration, error) { return daemon.SdWatchdogEnabled(false) }
	}
	if o.NewTicker == nil {
		o.NewTicker = func(d time.Duration) Ticker { return realTicker{time.NewTicker(d)} }
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Notifier{opts: o}
}

type realTicker struct{ t *time.Ticker }

func (r realTicker) C() <-chan time.Time { return r.t.C }
func (r realTicker) Stop()               { r.t.Stop() }

// send delivers state; failures are logged, never fatal, because the agent
// must keep its schedule even if the service manager went away.
func (n *Notifier) send(state string) {
	if _, err := n.opts.Send(state); err != nil {
		n.opts.Logger.Warn("sd_notify failed", "state", firstLine(state), "err", err)
	}
}

// Ready says the agent is up (READY=1) with an initial status.
func (n *Notifier) Ready(status string) {
	n.send(daemon.SdNotifyReady + "\nSTATUS=" + oneLine(status))
}

// Reloading brackets a policy reload; call Ready afterwards.
func (n *Notifier) Reloading() {
	n.send(fmt.Sprintf("%s\nMONOTONIC_USEC=%s", daemon.SdNotifyReloading, daemon.SdNotifyMonotonicUsec()))
}

// Status sets the free-form status `systemctl status` shows.
func (n *Notifier) Status(s string) { n.send("STATUS=" + oneLine(s)) }

// Stopping says the agent is shutting down.
func (n *Notifier) Stopping() { n.send(daemon.SdNotifyStopping + "\nSTATUS=stopping") }

// Observe reports a decision as STATUS=<decision>: <reason>.
func (n *Notifier) Observe(r scheduler.Result) {
	n.Status(StatusLine(r))
}

// StatusLine is the status text for a decision.
func StatusLine(r scheduler.Result) string {
	s := string(r.Decision) + ": " + r.Reason
	if r.DryRun {
		s += " [dry run]"
	}
	return s
}

// Watchdog pings systemd at half the watchdog timeout until ctx ends. It
// returns at once when the watchdog is off for this process. It runs on its
// own goroutine (the caller starts it) so a long pass of the pipeline does
// not starve it.
func (n *Notifier) Watchdog(ctx context.Context) error {
	timeout, err := n.opts.WatchdogInterval()
	if err != nil {
		return fmt.Errorf("watchdog: %w", err)
	}
	if timeout <= 0 {
		return nil
	}
	t := n.opts.NewTicker(timeout / 2)
	defer t.Stop()
	n.send(daemon.SdNotifyWatchdog)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C():
			n.send(daemon.SdNotifyWatchdog)
		}
	}
}

// oneLine keeps a status to one line: a newline would start a new
// notification field.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func firstLine(s string) string {
	first, _, _ := strings.Cut(s, "\n")
	return first
}
