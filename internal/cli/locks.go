package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/offpeak/offpeak/internal/printable"
	"github.com/offpeak/offpeak/internal/redact"
	"github.com/offpeak/offpeak/plugins"
)

// newLocksCmd is `offpeak locks`: inspect and administer a group's reboot
// slots on whatever locker the policy names. Every subcommand prints the
// same shape for every backend.
func newLocksCmd(a *App) *cobra.Command {
	var policyPath, group string
	cmd := &cobra.Command{Use: "locks", Short: "Show and administer reboot slots (status, unlock, set-max, freeze, thaw)"}
	cmd.PersistentFlags().StringVar(&policyPath, "policy", "", "policy file (default: the search order, or the built-in default)")
	cmd.PersistentFlags().StringVar(&group, "group", "", "group (default: the policy's [node] group)")

	// with opens the policy's locker, resolves the group and runs f.
	var slots int // the policy's [lock] slots, once with has run
	with := func(cmd *cobra.Command, f func(ctx context.Context, l plugins.Locker, group string) error) error {
		ctx := cmd.Context()
		l, pol, closeFn, err := a.openLocker(ctx, policyPath)
		if err != nil {
			return err
		}
		defer closeFn()
		slots = pol.Lock.Slots
		g := group
		if g == "" {
			g = pol.Node.Group
		}
		if g == "" {
			g = "default"
		}
		return f(ctx, l, g)
	}

	var output string
	status := &cobra.Command{
		Use:   "status",
		Short: "Show the group's slots, holders and freeze state",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return with(cmd, func(ctx context.Context, l plugins.Locker, g string) error {
				return runLocksStatus(ctx, a.Stdout, l, g, output, a.Now())
			})
		},
	}
	status.Flags().StringVarP(&output, "output", "o", "text", "text or json")

	var reason string
	unlock := &cobra.Command{
		Use:   "unlock ID",
		Short: "Free the slot held by node ID (for a node that will not come back)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return with(cmd, func(ctx context.Context, l plugins.Locker, g string) error {
				return runLocksUnlock(ctx, a.Stdout, l, g, args[0], reason)
			})
		},
	}
	unlock.Flags().StringVar(&reason, "reason", "", "why, recorded by backends that keep history")

	setMax := &cobra.Command{
		Use:   "set-max N",
		Short: "Set the group's slot count; holders above it keep their slots",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := strconv.Atoi(args[0])
			if err != nil || n < 0 {
				return &ExitError{Code: 2, Err: fmt.Errorf("set-max: %q is not a non-negative integer", args[0])}
			}
			return with(cmd, func(ctx context.Context, l plugins.Locker, g string) error {
				return runLocksSetMax(ctx, a.Stdout, l, g, n)
			})
		},
	}

	var freezeReason string
	freeze := &cobra.Command{
		Use:   "freeze",
		Short: "Stop granting new slots in the group until thawed",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return with(cmd, func(ctx context.Context, l plugins.Locker, g string) error {
				return runLocksFreeze(ctx, a.Stdout, l, g, freezeReason, operator(), a.Now(), slots)
			})
		},
	}
	freeze.Flags().StringVar(&freezeReason, "reason", "", "why the group is frozen (required)")
	_ = freeze.MarkFlagRequired("reason")

	thaw := &cobra.Command{
		Use:   "thaw",
		Short: "Let the group grant slots again",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return with(cmd, func(ctx context.Context, l plugins.Locker, g string) error {
				return runLocksThaw(ctx, a.Stdout, l, g)
			})
		},
	}
	cmd.AddCommand(status, unlock, setMax, freeze, thaw)
	return cmd
}

// operator names who froze a group from the command line.
func operator() string {
	if u := os.Getenv("SUDO_USER"); u != "" {
		return "operator:" + u
	}
	if u := os.Getenv("USER"); u != "" {
		return "operator:" + u
	}
	return "operator"
}

// holderView is a holder as `locks status -o json` prints it.
type holderView struct {
	plugins.Holder
	// HeldFor is seconds since AcquiredAt; null when the holder was written
	// by a tool that records no time (airlock, a FleetLock client).
	HeldFor *float64 `json:"held_for"`
}

// lockStatusView is plugins.LockState with per-holder held_for.
type lockStatusView struct {
	plugins.LockState
	Holders []holderView `json:"holders"`
}

func newLockStatusView(st plugins.LockState, now time.Time) lockStatusView {
	v := lockStatusView{LockState: st, Holders: make([]holderView, 0, len(st.Holders))}
	for _, h := range st.Holders {
		hv := holderView{Holder: h}
		if !h.AcquiredAt.IsZero() {
			s := now.Sub(h.AcquiredAt).Seconds()
			hv.HeldFor = &s
		}
		v.Holders = append(v.Holders, hv)
	}
	return v
}

// runLocksStatus prints a group's state as text or JSON.
func runLocksStatus(ctx context.Context, w io.Writer, l plugins.Locker, group, output string, now time.Time) error {
	if output != "text" && output != "json" {
		return &ExitError{Code: 2, Err: fmt.Errorf("--output must be text or json, not %q", output)}
	}
	st, err := l.Status(ctx, group)
	if err != nil {
		return fmt.Errorf("locks status of group %q: %w", group, err)
	}
	return printLockState(w, st, output, now)
}

func printLockState(w io.Writer, st plugins.LockState, output string, now time.Time) error {
	// Holder records may come from any client of the group: never echo a
	// secret one carries.
	st, hidden := redact.LockState(st)
	if output == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(newLockStatusView(st, now))
	}
	// Records are written by other hosts: every field is printed escaped,
	// so a control character can neither forge a row nor drive the terminal.
	p := printable.String
	if len(hidden) > 0 {
		defer fmt.Fprintf(w, "note: secrets in %s are shown as %s\n", p(strings.Join(hidden, ", ")), redact.Mask)
	}
	fmt.Fprintf(w, "group:  %s\n", p(st.Group))
	fmt.Fprintf(w, "slots:  %d of %d used\n", len(st.Holders), st.Slots)
	if st.Frozen {
		fmt.Fprintf(w, "frozen: yes — %s", p(st.FrozenReason))
		if st.FrozenBy != "" {
			fmt.Fprintf(w, " (by %s", p(st.FrozenBy))
			if !st.FrozenAt.IsZero() {
				fmt.Fprintf(w, " at %s", st.FrozenAt.UTC().Format(time.RFC3339))
			}
			fmt.Fprint(w, ")")
		}
		fmt.Fprintln(w)
	} else {
		fmt.Fprintln(w, "frozen: no")
	}
	if len(st.Holders) == 0 {
		fmt.Fprintln(w, "holders: none")
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tHOSTNAME\tSINCE\tDEADLINE")
	for _, h := range st.Holders {
		since, deadline, host := "-", "-", p(h.Hostname)
		if host == "" {
			host = "-"
		}
		if !h.AcquiredAt.IsZero() {
			since = fmt.Sprintf("%s (%s ago)", h.AcquiredAt.UTC().Format(time.RFC3339), now.Sub(h.AcquiredAt).Round(time.Second))
		}
		if !h.Deadline.IsZero() {
			deadline = h.Deadline.UTC().Format(time.RFC3339)
			if !now.Before(h.Deadline) {
				deadline += " (passed)"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", p(h.ID), host, since, deadline)
	}
	return tw.Flush()
}

// runLocksUnlock frees the slot of id. Unlocking a node that holds none is
// an error, so a typo in the id does not pass silently.
func runLocksUnlock(ctx context.Context, w io.Writer, l plugins.Locker, group, id, reason string) error {
	if reason == "" {
		reason = "unlock by " + operator()
	}
	err := l.Release(ctx, plugins.ReleaseRequest{Group: group, ID: id, Reason: reason})
	if errors.Is(err, plugins.ErrNotHolder) {
		return &ExitError{Code: 1, Err: fmt.Errorf("%s holds no slot in group %q", id, group)}
	}
	if err != nil {
		return fmt.Errorf("unlock %s in group %q: %w", id, group, err)
	}
	fmt.Fprintf(w, "released the slot of %s in group %s\n", id, group)
	return nil
}

func runLocksSetMax(ctx context.Context, w io.Writer, l plugins.Locker, group string, n int) error {
	st, err := l.SetSlots(ctx, group, n)
	if err != nil {
		return fmt.Errorf("set-max of group %q: %w", group, err)
	}
	fmt.Fprintf(w, "group %s: %d slots, %d held\n", group, st.Slots, len(st.Holders))
	if len(st.Holders) > st.Slots {
		fmt.Fprintf(w, "holders above the new count keep their slots; nobody new is granted until fewer than %d hold one\n", st.Slots)
	}
	return nil
}

// runLocksFreeze freezes group; slots is the count a group that does not
// exist yet gets at the thaw (the policy's [lock] slots).
func runLocksFreeze(ctx context.Context, w io.Writer, l plugins.Locker, group, reason, by string, now time.Time, slots int) error {
	if reason == "" {
		return &ExitError{Code: 2, Err: errors.New("freeze: --reason is required")}
	}
	if err := l.Freeze(ctx, plugins.FreezeRequest{Group: group, Reason: reason, By: by, At: now, Slots: slots}); err != nil {
		return fmt.Errorf("freeze group %q: %w", group, err)
	}
	fmt.Fprintf(w, "group %s frozen: %s\n", group, reason)
	return nil
}

func runLocksThaw(ctx context.Context, w io.Writer, l plugins.Locker, group string) error {
	if err := l.Thaw(ctx, group); err != nil {
		return fmt.Errorf("thaw group %q: %w", group, err)
	}
	fmt.Fprintf(w, "group %s thawed\n", group)
	return nil
}
