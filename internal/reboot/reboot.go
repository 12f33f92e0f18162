// Package reboot performs the reboot at the end of offpeak's admission
// pipeline: it honours logind block inhibitors, warns logged-in users, waits
// the configured grace period and then asks logind to reboot, falling back
// to `systemctl reboot` only when logind cannot be reached at all.
package reboot

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"strings"
	"time"

	"github.com/offpeak/offpeak/internal/logind"
)

// Defaults used when the corresponding Rebooter field is zero.
const (
	DefaultInhibitorMaxWait = 15 * time.Minute
	DefaultInhibitorPoll    = 30 * time.Second
)

// Who is the name offpeak uses for its own inhibitor locks.
const Who = "offpeak"

// ErrInhibited means a block inhibitor on shutdown was still held when the
// wait ended. The returned error is an *InhibitedError naming the holders.
var ErrInhibited = errors.New("reboot blocked by inhibitor")

// InhibitedError lists the inhibitors that blocked the reboot.
type InhibitedError struct {
	Inhibitors []logind.Inhibitor
}

// Error reads "blocked by inhibitor: <who>: <why>" (joined with "; " when
// several hold), which is what `offpeak status` shows.
func (e *InhibitedError) Error() string {
	parts := make([]string, len(e.Inhibitors))
	for i, in := range e.Inhibitors {
		parts[i] = in.Who + ": " + in.Why
	}
	return "blocked by inhibitor: " + strings.Join(parts, "; ")
}

// Is makes errors.Is(err, ErrInhibited) true.
func (e *InhibitedError) Is(target error) bool { return target == ErrInhibited }

// Logind is what the Rebooter needs from logind; *logind.Client has it.
type Logind interface {
	Reboot(ctx context.Context, interactive bool) error
	ListInhibitors(ctx context.Context) ([]logind.Inhibitor, error)
	Inhibit(ctx context.Context, what, who, why, mode string) (release func() error, err error)
}

// Runner runs a command (argv, no shell) with stdin.
type Runner interface {
	Run(ctx context.Context, argv []string, stdin []byte) error
}

// Clock provides timers so waits can be driven by tests.
type Clock interface {
	After(d time.Duration) <-chan time.Time
}

// ExecRunner runs commands with os/exec.
type ExecRunner struct{}

// Run executes argv[0] with the remaining arguments; the error carries the
// command's combined output.
func (ExecRunner) Run(ctx context.Context, argv []string, stdin []byte) error {
	if len(argv) == 0 {
		return errors.New("reboot: empty command")
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdin = bytes.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(argv, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

type realClock struct{}

func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Rebooter reboots the host. The zero value reboots through systemctl
// immediately; set Logind to go through logind.
type Rebooter struct {
	// Logind is the logind client; nil when the system bus could not be
	// reached, in which case the reboot goes through systemctl.
	Logind Logind
	Runner Runner       // nil: ExecRunner
	Clock  Clock        // nil: the real clock
	Log    *slog.Logger // nil: discard

	// WarnUsers sends Message to logged-in users with wall(1) before the
	// delay starts.
	WarnUsers bool
	// Message is the broadcast text; empty means a default naming Delay.
	Message string
	// Delay is the grace period between the broadcast and the reboot.
	Delay time.Duration
	// DryRun logs "would reboot" and does nothing else.
	DryRun bool

	// IgnoreInhibitors skips the wait for block inhibitors.
	IgnoreInhibitors bool
	// InhibitorMaxWait bounds the wait for block inhibitors; 0 means
	// DefaultInhibitorMaxWait, a negative value means check once.
	InhibitorMaxWait time.Duration
	// InhibitorPoll is how often inhibitors are listed again while one
	// blocks; 0 means DefaultInhibitorPoll.
	InhibitorPoll time.Duration
}

func (r *Rebooter) log() *slog.Logger {
	if r.Log != nil {
		return r.Log
	}
	return slog.New(slog.DiscardHandler)
}

func (r *Rebooter) clock() Clock {
	if r.Clock != nil {
		return r.Clock
	}
	return realClock{}
}

func (r *Rebooter) runner() Runner {
	if r.Runner != nil {
		return r.Runner
	}
	return ExecRunner{}
}

// message returns the broadcast text.
func (r *Rebooter) message() string {
	if r.Message != "" {
		return r.Message
	}
	if r.Delay > 0 {
		return fmt.Sprintf("offpeak: this host will reboot in %s to finish an OS update. Please save your work and log out.", r.Delay)
	}
	return "offpeak: this host is rebooting now to finish an OS update."
}

// Reboot waits for block inhibitors, broadcasts, sleeps Delay and reboots.
// It returns without rebooting when ctx ends first, when an inhibitor still
// blocks after InhibitorMaxWait (an error wrapping ErrInhibited), or when
// logind refuses (its error is returned, no fallback). Only when logind is
// unreachable does it run `systemctl reboot`.
func (r *Rebooter) Reboot(ctx context.Context) error {
	log := r.log()
	if r.DryRun {
		log.Info("would reboot", "dry_run", true, "delay", r.Delay, "warn_users", r.WarnUsers)
		return nil
	}
	if !r.IgnoreInhibitors {
		maxWait := r.InhibitorMaxWait
		if maxWait == 0 {
			maxWait = DefaultInhibitorMaxWait
		}
		if err := r.WaitInhibitors(ctx, maxWait, nil); err != nil {
			return err
		}
	}
	if r.WarnUsers {
		// A failed warning must not hold back a reboot the pipeline has
		// already admitted; it is logged instead.
		if err := r.Broadcast(ctx, r.message()); err != nil {
			log.Warn("broadcast to logged-in users failed", "err", err)
		}
	}
	if r.Delay > 0 {
		log.Info("rebooting after delay", "delay", r.Delay)
		if err := r.sleep(ctx, r.Delay); err != nil {
			return fmt.Errorf("reboot: waiting %s before reboot: %w", r.Delay, err)
		}
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("reboot: %w", err)
	}
	if r.Logind != nil {
		// Non-interactive: offpeak runs unattended, polkit must not prompt.
		err := r.Logind.Reboot(ctx, false)
		if err == nil {
			log.Info("reboot requested from logind")
			return nil
		}
		if !logind.IsUnavailable(err) {
			return fmt.Errorf("reboot: %w", err)
		}
		log.Warn("logind unreachable, rebooting with systemctl", "err", err)
	}
	if err := r.runner().Run(ctx, []string{"systemctl", "reboot"}, nil); err != nil {
		return fmt.Errorf("reboot: systemctl reboot: %w", err)
	}
	log.Info("reboot requested with systemctl")
	return nil
}

// Broadcast writes message to every logged-in terminal with wall(1),
// the text on stdin so it is never parsed as options.
func (r *Rebooter) Broadcast(ctx context.Context, message string) error {
	if !strings.HasSuffix(message, "\n") {
		message += "\n"
	}
	if err := r.runner().Run(ctx, []string{"wall"}, []byte(message)); err != nil {
		return fmt.Errorf("reboot: broadcast: %w", err)
	}
	return nil
}

// WaitInhibitors returns nil once no "block" inhibitor on shutdown is held,
// listing again every InhibitorPoll, for at most maxWait (maxWait <= 0 checks
// once). It returns an *InhibitedError (errors.Is ErrInhibited) if one still
// blocks at the end. waiting, when set, is told who blocks each time that
// changes, before the wait. Delay inhibitors are not waited for: logind itself
// holds the shutdown for them, bounded by InhibitDelayMaxSec.
//
// logind lets root reboot through block inhibitors, so this wait is what
// makes offpeak respect them.
func (r *Rebooter) WaitInhibitors(ctx context.Context, maxWait time.Duration, waiting func(blockers string)) error {
	if r.Logind == nil {
		return nil
	}
	poll := r.InhibitorPoll
	if poll <= 0 {
		poll = DefaultInhibitorPoll
	}
	var deadline <-chan time.Time
	var lastKey string
	for {
		list, err := r.Logind.ListInhibitors(ctx)
		if err != nil {
			if logind.IsUnavailable(err) {
				// No logind means nobody can hold a logind inhibitor.
				r.log().Warn("cannot list inhibitors, logind unreachable", "err", err)
				return nil
			}
			return fmt.Errorf("reboot: listing inhibitors: %w", err)
		}
		blocking := Blocking(list)
		if len(blocking) == 0 {
			return nil
		}
		ierr := &InhibitedError{Inhibitors: blocking}
		if maxWait <= 0 {
			return ierr
		}
		if key := ierr.Error(); key != lastKey {
			r.log().Info("waiting for inhibitor", "inhibitors", key, "max_wait", maxWait)
			lastKey = key
			if waiting != nil {
				waiting(key)
			}
		}
		if deadline == nil {
			deadline = r.clock().After(maxWait)
		}
		next := r.clock().After(poll)
		select {
		case <-ctx.Done():
			return fmt.Errorf("reboot: waiting for inhibitors (%s): %w", ierr.Error(), ctx.Err())
		case <-deadline:
			return ierr
		case <-next:
		}
	}
}

// Blocking returns the inhibitors that block a shutdown: mode "block" and
// What including "shutdown". "block-weak" locks are skipped like logind
// skips them for privileged callers.
func Blocking(list []logind.Inhibitor) []logind.Inhibitor {
	var out []logind.Inhibitor
	for _, in := range list {
		if in.Mode == "block" && in.Inhibits("shutdown") {
			out = append(out, in)
		}
	}
	return out
}

// HoldShutdownDelay takes offpeak's own "delay" inhibitor on shutdown so a
// shutdown started by someone else waits (up to logind's
// InhibitDelayMaxSec) while offpeak writes its state. Call release when the
// state is on disk. Without logind it returns a no-op release.
func (r *Rebooter) HoldShutdownDelay(ctx context.Context, why string) (release func() error, err error) {
	noop := func() error { return nil }
	if r.Logind == nil {
		return noop, nil
	}
	release, err = r.Logind.Inhibit(ctx, "shutdown", Who, why, "delay")
	if err != nil {
		if logind.IsUnavailable(err) {
			r.log().Debug("no delay inhibitor, logind unreachable", "err", err)
			return noop, nil
		}
		return nil, fmt.Errorf("reboot: taking delay inhibitor: %w", err)
	}
	return release, nil
}

func (r *Rebooter) sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-r.clock().After(d):
		return nil
	}
}
