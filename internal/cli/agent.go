package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/offpeak/offpeak/installer/gpt"
	"github.com/offpeak/offpeak/internal/printable"
	"github.com/offpeak/offpeak/internal/statefile"
	"github.com/offpeak/offpeak/scheduler"
)

func newAgentCmd(a *App) *cobra.Command {
	var f agentFlags
	var ops opsFlags
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the long-lived agent: reboot inside windows, holding a slot, after checks",
		Long: "Run the agent. It evaluates on a jittered period, at each window edge and when a\n" +
			"slot frees up; SIGHUP reloads the policy (an invalid policy is refused and the old\n" +
			"one kept). With --dry-run it logs the reboot it would do and takes no slot.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			pol, err := a.LoadPolicy(f.policyPath)
			if err != nil {
				return err
			}
			opsRT, err := a.startOps(ctx, pol, ops)
			if err != nil {
				return err
			}
			defer opsRT.Stop()
			f.observer = opsRT.Observer()
			f.ops = opsRT
			rt, err := a.buildAgent(ctx, pol, f)
			if err != nil {
				return err
			}
			defer rt.Close()
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			go func() {
				for {
					select {
					case <-ctx.Done():
						return
					case <-hup:
						opsRT.Reloading()
						if err := a.reloadAgent(ctx, rt, f); err != nil {
							a.Logger.Error("policy not reloaded", "err", err)
							opsRT.Reloaded(err.Error())
							continue
						}
						a.Logger.Info("policy reloaded")
						opsRT.Reloaded("policy reloaded")
					}
				}
			}()
			a.Logger.Info("agent started", "strategy", pol.Strategy, "group", pol.Node.Group, "dry_run", f.dryRun, "policy", policySources(pol.Sources))
			opsRT.Ready("agent started")
			return rt.agent.Run(ctx)
		},
	}
	cmd.Flags().StringVar(&f.policyPath, "policy", "", "policy file (default: the search order, or the built-in default)")
	cmd.Flags().BoolVar(&f.dryRun, "dry-run", false, "log the reboot instead of rebooting; take no slot")
	addOpsFlags(cmd, &ops)
	return cmd
}

// reloadAgent is what SIGHUP does: read the policy again and rebuild every
// component it configures, or refuse it and keep the running ones. The
// outcome goes into the state, for `offpeak status`.
func (a *App) reloadAgent(ctx context.Context, rt *runtime, f agentFlags) error {
	np, err := a.LoadPolicy(f.policyPath)
	if err == nil {
		err = a.reload(ctx, rt, np, f)
	}
	if err != nil {
		err = fmt.Errorf("policy reload refused; the running policy stays in force: %w", err)
	}
	rt.agent.RecordReload(err)
	return err
}

func orNone(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func policySources(s []string) string {
	if len(s) == 0 {
		return "built-in default"
	}
	return strings.Join(s, ",")
}

func newCheckCmd(a *App) *cobra.Command {
	var f agentFlags
	var now, output string
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Run one pass of the pipeline (for a systemd timer) and print the decision",
		Long: "Run one pass: reboot if every gate is open, otherwise say what it waits for.\n" +
			"Exits 0 whatever the decision; non-zero only on an error.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := CheckOutput(output, "text", "json"); err != nil {
				return err
			}
			if now != "" {
				// A what-if at another instant must never reboot this
				// machine now, nor record a reboot at that instant.
				if !f.dryRun {
					return errors.New("--now needs --dry-run: it evaluates what would happen at that instant and must not reboot this machine now")
				}
				t, err := time.Parse(time.RFC3339, now)
				if err != nil {
					return fmt.Errorf("--now: want RFC 3339 such as 2025-06-03T02:30:00Z: %w", err)
				}
				fc := scheduler.NewFakeClock(t)
				fc.SetAutoAdvance(true)
				f.clock = fc
				a.Now = func() time.Time { return t }
			}
			pol, err := a.LoadPolicy(f.policyPath)
			if err != nil {
				return err
			}
			if !f.dryRun {
				// One pass at a time: a timer-driven check must not run
				// beside the agent or the post-boot gate.
				release, err := a.lockForCheck()
				if err != nil {
					return err
				}
				defer release()
			}
			rt, err := a.buildAgent(cmd.Context(), pol, f)
			if err != nil {
				return err
			}
			defer rt.Close()
			r, err := rt.agent.Step(cmd.Context())
			if err != nil {
				return err
			}
			if output == "json" {
				return WriteJSON(a.Stdout, r)
			}
			printResult(a, r)
			return nil
		},
	}
	cmd.Flags().StringVar(&f.policyPath, "policy", "", "policy file (default: the search order, or the built-in default)")
	cmd.Flags().BoolVar(&f.dryRun, "dry-run", false, "decide, but do not reboot and take no slot")
	cmd.Flags().StringVar(&now, "now", "", "evaluate at this instant instead of the clock (RFC 3339); needs --dry-run")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "text or json")
	return cmd
}

func printResult(a *App, r scheduler.Result) {
	// Reasons and holder records carry text other hosts and servers wrote:
	// escaped, so it can neither forge lines nor drive the terminal.
	p := printable.String
	tw := tabwriter.NewWriter(a.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "decision:\t%s\n", r.Decision)
	fmt.Fprintf(tw, "reason:\t%s\n", p(r.Reason))
	fmt.Fprintf(tw, "phase:\t%s\n", r.Phase)
	fmt.Fprintf(tw, "strategy:\t%s\n", r.Strategy)
	fmt.Fprintf(tw, "node:\t%s (group %s)\n", p(r.Node), p(r.Group))
	fmt.Fprintf(tw, "holding slot:\t%v\n", r.HoldingSlot)
	if r.NodeIDCollision {
		fmt.Fprintf(tw, "node id collision:\tyes: another machine uses this node id; give each machine its own /etc/machine-id\n")
	}
	if r.NextWindow != nil {
		fmt.Fprintf(tw, "next window:\t%s\n", r.NextWindow.Format(time.RFC3339))
	}
	if r.Window != nil {
		fmt.Fprintf(tw, "window:\t%s, reboots allowed until %s\n", r.Window.Name, r.Window.RebootUntil.Format(time.RFC3339))
	}
	if r.Staged != nil {
		fmt.Fprintf(tw, "staged:\t%s (%s)\n", r.Staged.State, p(r.Staged.Reason))
		if r.Staged.Backend != "" {
			fmt.Fprintf(tw, "installer:\t%s, booted %s, staged %s\n", r.Staged.Backend, p(orNone(r.Staged.BootedVersion)), p(orNone(r.Staged.Version)))
		}
	}
	if r.Lock != nil {
		var ids []string
		for _, h := range r.Lock.Holders {
			ids = append(ids, p(h.ID))
		}
		frozen := ""
		if r.Lock.Frozen {
			frozen = ", frozen"
		}
		if r.Lock.Opaque {
			fmt.Fprintf(tw, "slots:\tnot reported by the lock service%s\n", frozen)
		} else {
			fmt.Fprintf(tw, "slots:\t%d/%d held (%s)%s\n", len(r.Lock.Holders), r.Lock.Slots, strings.Join(ids, ", "), frozen)
		}
	}
	for _, c := range r.Checks {
		fmt.Fprintf(tw, "check %s:\t%s at %s: %s\n", c.Name, c.Outcome, c.Time.Format(time.RFC3339), p(c.Reason))
	}
	if r.LastReboot != nil {
		fmt.Fprintf(tw, "last reboot:\t%s\n", r.LastReboot.Format(time.RFC3339))
	}
	if r.DryRun {
		fmt.Fprintf(tw, "dry run:\ttrue\n")
	}
	tw.Flush()
}

// statusJSON is `offpeak status --output json`. Result is nil when no
// agent has decided anything yet but a failed install is to be reported.
type statusJSON struct {
	*scheduler.Result
	StateFile     string      `json:"state_file"`
	SlotSince     *time.Time  `json:"slot_acquired_at,omitempty"`
	RebootError   string      `json:"reboot_error,omitempty"`
	FailureReason string      `json:"failure_reason,omitempty"`
	Reboots       []time.Time `json:"recent_reboots,omitempty"`
	ReloadRefused string      `json:"reload_refused,omitempty"`
	// InstallFailures are the A/B slots whose last `offpeak install` did
	// not verify: they stay unbootable until an install verifies.
	InstallFailures []gpt.InstallRecord `json:"install_failures,omitempty"`
	InstallProblems []string            `json:"install_record_problems,omitempty"`
}

func newStatusCmd(a *App) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show what the agent decided last and why, and slots a failed install left unbootable",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := CheckOutput(output, "text", "json"); err != nil {
				return err
			}
			var out statusJSON
			out.InstallFailures, out.InstallProblems = a.installFailures()
			installs := len(out.InstallFailures)+len(out.InstallProblems) > 0
			st, path, err := a.readState()
			if err == nil && st.Last == nil {
				err = noDecision(path + " has no decision yet")
			}
			// Without a decision the install failures are still worth
			// showing; a state that cannot be read stays an error.
			var none noDecision
			if err != nil && (!installs || !errors.As(err, &none)) {
				if installs && output == "text" {
					printInstallFailures(a.Stdout, out)
				}
				return err
			}
			if err == nil {
				out.Result, out.StateFile = st.Last, path
				out.RebootError, out.FailureReason, out.Reboots = st.RebootError, st.FailureReason, st.Reboots
				out.ReloadRefused = st.ReloadRefused
				if !st.SlotAcquiredAt.IsZero() {
					s := st.SlotAcquiredAt
					out.SlotSince = &s
				}
			}
			if output == "json" {
				return WriteJSON(a.Stdout, out)
			}
			if err != nil {
				fmt.Fprintf(a.Stdout, "agent: no decision yet (%v)\n", err)
			} else {
				fmt.Fprintf(a.Stdout, "as of %s (%s)\n", st.Last.Time.Format(time.RFC3339), path)
				printResult(a, *st.Last)
				if out.SlotSince != nil {
					fmt.Fprintf(a.Stdout, "slot held since: %s\n", out.SlotSince.Format(time.RFC3339))
				}
				if st.RebootError != "" {
					fmt.Fprintf(a.Stdout, "last reboot error: %s\n", printable.String(st.RebootError))
				}
				if st.ReloadRefused != "" {
					fmt.Fprintf(a.Stdout, "%s (at %s)\n", printable.String(st.ReloadRefused), st.ReloadRefusedAt.Format(time.RFC3339))
				}
			}
			printInstallFailures(a.Stdout, out)
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "text or json")
	return cmd
}

func printInstallFailures(w io.Writer, out statusJSON) {
	for _, r := range out.InstallFailures {
		fmt.Fprintf(w, "install: %s is unbootable: %s (disk %s, PARTUUID %s)\n",
			printable.String(r.Slot), printable.String(r.Why()), printable.String(r.Disk), printable.String(r.PARTUUID))
	}
	for _, p := range out.InstallProblems {
		fmt.Fprintf(w, "install: %s\n", printable.String(p))
	}
}

// noDecision: no agent has run here yet, or it has decided nothing yet.
type noDecision string

func (e noDecision) Error() string { return string(e) }

// installFailures returns the records of installs that did not verify.
func (a *App) installFailures() ([]gpt.InstallRecord, []string) {
	recs, errs := gpt.InstallRecords(a.Layout().InstallRecordDir())
	var failed []gpt.InstallRecord
	for _, r := range recs {
		if r.Result != gpt.InstallVerified {
			failed = append(failed, r)
		}
	}
	var problems []string
	for _, e := range errs {
		problems = append(problems, e.Error())
	}
	return failed, problems
}

// readState reads the agent's state, or the dry-run state when no real
// agent has run here.
func (a *App) readState() (scheduler.State, string, error) {
	var st scheduler.State
	for _, dry := range []bool{false, true} {
		p := a.stateFile(dry)
		err := statefile.File{Path: p}.Load(&st)
		if err == nil {
			return st, p, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return st, p, err
		}
	}
	return st, "", noDecision(fmt.Sprintf("no agent state in %s: the agent has not run yet", a.Layout().StateDir()))
}
