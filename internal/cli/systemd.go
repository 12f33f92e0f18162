package cli

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/spf13/cobra"

	"github.com/offpeak/offpeak/internal/statefile"
	"github.com/offpeak/offpeak/internal/systemdunit"
	"github.com/offpeak/offpeak/scheduler"
)

func newSystemdCmd(a *App) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "systemd",
		Short: "Generate systemd units and run offpeak's systemd helpers",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newSystemdTimerCmd(a), newPostBootGateCmd(a))
	return cmd
}

func newSystemdTimerCmd(a *App) *cobra.Command {
	var policyPath, unit string
	var every, delay time.Duration
	cmd := &cobra.Command{
		Use:   "timer",
		Short: "Print a .timer that runs `offpeak check` in the policy's maintenance windows",
		Long: "Print a systemd timer for timer mode (offpeak-check.service instead of the agent).\n" +
			"Each window's cron spec becomes OnCalendar= lines in the window's time zone that fire\n" +
			"at every window start, plus lines that fire every --every during the hours in which a\n" +
			"reboot may begin, so a node that found no free slot tries again. On the days a clock\n" +
			"change skips or repeats a time these lines name, systemd would resolve it otherwise\n" +
			"than offpeak: those days are left out of the zone's lines and their starts written in\n" +
			"UTC up to the end of the fifth year from now, so regenerate the timer before then (it\n" +
			"says when). A window that opens when a blackout ends gets its own line. The timer only\n" +
			"decides when offpeak runs: offpeak itself applies cutoffs, blackouts and DST rules.\n" +
			"A window that cannot be expressed is an error naming the window.\n\n" +
			"  offpeak systemd timer > /etc/systemd/system/offpeak.timer",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pol, err := a.LoadPolicy(policyPath)
			if err != nil {
				return err
			}
			out, err := systemdunit.Timer(pol, systemdunit.TimerOptions{Unit: unit, Every: every, RandomizedDelay: delay, Now: a.Now()})
			if err != nil {
				return &ExitError{Code: 1, Err: fmt.Errorf("cannot write a timer for this policy: %w", err)}
			}
			_, err = fmt.Fprint(a.Stdout, out)
			return err
		},
	}
	cmd.Flags().StringVar(&policyPath, "policy", "", "policy file (default: the search order, or the built-in default)")
	cmd.Flags().DurationVar(&every, "every", 5*time.Minute, "re-run the check this often while reboots may begin (whole minutes, at most 1h; 0: window starts only)")
	cmd.Flags().DurationVar(&delay, "randomized-delay", 5*time.Minute, "RandomizedDelaySec=, spreading a fleet's checks (0: none)")
	cmd.Flags().StringVar(&unit, "unit", systemdunit.DefaultUnit, "the service the timer starts")
	return cmd
}

func newPostBootGateCmd(a *App) *cobra.Command {
	var policyPath string
	var poll time.Duration
	cmd := &cobra.Command{
		Use:   "post-boot-gate",
		Short: "Wait for this boot's post-boot verdict; exit 0 when the boot is good (offpeak-postboot.service)",
		Long: "Block until offpeak has judged the first boot after its reboot, then exit 0 when the\n" +
			"post-boot checks passed and 1 when they failed. On any other boot it exits 0 at once.\n" +
			"When the agent runs it waits for the agent's verdict; otherwise (timer mode) it runs\n" +
			"the post-boot phase itself. Units ordered after offpeak-postboot.service (e.g.\n" +
			"update-engine.service, which marks the boot good) then start only after a good verdict.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if poll <= 0 {
				return fmt.Errorf("--poll must be positive")
			}
			return a.postBootGate(cmd.Context(), policyPath, poll)
		},
	}
	cmd.Flags().StringVar(&policyPath, "policy", "", "policy file (default: the search order, or the built-in default)")
	cmd.Flags().DurationVar(&poll, "poll", 5*time.Second, "how often to look at the agent's state or run the post-boot phase again")
	return cmd
}

// postBootPending reports whether st waits for this boot's verdict: the
// post-boot phase, or a reboot that has happened but no pass has seen yet.
func postBootPending(st scheduler.State, boot string) bool {
	switch st.Phase {
	case scheduler.PhasePostBoot:
		return true
	case scheduler.PhaseRebooting:
		return st.RebootFromBootID != "" && st.RebootFromBootID != boot
	}
	return false
}

// postBootVerdict turns a settled state into the gate's exit status. A
// rollback means the old, good version boots next, so the gate lets it on.
func (a *App) postBootVerdict(st scheduler.State) error {
	switch {
	case st.Phase == scheduler.PhaseFailed && !st.RolledBack:
		return &ExitError{Code: 1, Err: fmt.Errorf("post-boot verdict: bad boot: %s", st.FailureReason)}
	case st.Phase == scheduler.PhaseFailed:
		fmt.Fprintf(a.Stdout, "post-boot verdict: bad boot, rolled back: %s\n", st.FailureReason)
	default:
		fmt.Fprintf(a.Stdout, "post-boot verdict: good (phase %s)\n", st.Phase)
	}
	return nil
}

func (a *App) loadAgentState() (scheduler.State, error) {
	var st scheduler.State
	err := statefile.File{Path: a.stateFile(false)}.Load(&st)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return st, err
	}
	if st.Phase == "" {
		st.Phase = scheduler.PhaseIdle
	}
	return st, nil
}

func (a *App) postBootGate(ctx context.Context, policyPath string, poll time.Duration) error {
	boot, err := a.bootID()
	if err != nil {
		return err
	}
	var rt *runtime
	defer func() {
		if rt != nil {
			rt.Close()
		}
	}()
	waiting := false
	for {
		if rt == nil {
			st, err := a.loadAgentState()
			if err != nil {
				return err
			}
			if !postBootPending(st, boot) {
				return a.postBootVerdict(st)
			}
			release, err := a.tryAgentLock(roleGate)
			var held *lockHeldError
			switch {
			case err == nil:
				// No agent: run the post-boot phase here, holding the lock
				// so an agent started meanwhile waits for us.
				defer release()
				pol, err := a.LoadPolicy(policyPath)
				if err != nil {
					return err
				}
				if rt, err = a.buildAgent(ctx, pol, agentFlags{policyPath: policyPath}); err != nil {
					return err
				}
				a.Logger.Info("post-boot gate: running the post-boot phase")
			case errors.As(err, &held):
				if !waiting {
					a.Logger.Info("post-boot gate: waiting for the agent's verdict", "phase", st.Phase, "held_by", held.role, "pid", held.pid)
					waiting = true
				}
			default:
				return err
			}
		}
		if rt != nil {
			r, err := rt.agent.Step(ctx)
			if err != nil {
				a.Logger.Warn("post-boot gate: pass failed", "err", err)
			}
			if st := rt.agent.State(); !postBootPending(st, boot) {
				return a.postBootVerdict(st)
			}
			a.Logger.Info("post-boot gate: not decided yet", "decision", r.Decision, "reason", r.Reason)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("post-boot gate: no verdict: %w", ctx.Err())
		case <-time.After(poll):
		}
	}
}
