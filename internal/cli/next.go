package cli

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/offpeak/offpeak/scheduler"
)

// windowJSON is the shape of `offpeak next --output json`.
type windowJSON struct {
	Window      string `json:"window"`
	Start       string `json:"start"`
	End         string `json:"end"`
	RebootUntil string `json:"reboot_until"`
	Timezone    string `json:"timezone"`
}

func newNextCmd(a *App) *cobra.Command {
	var policyPath, from, output string
	var count int
	cmd := &cobra.Command{
		Use:   "next",
		Short: "List the next maintenance windows",
		Long: "List the next maintenance windows of the policy, overlapping windows merged and\n" +
			"blackouts cut out. A reboot may begin from start until reboot_until (end minus cutoff).\n" +
			"Windows that chain without a gap forever (e.g. 26 hours every day) are listed as\n" +
			"consecutive pieces of about a week, each starting where the previous one ends.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := CheckOutput(output, "text", "json"); err != nil {
				return err
			}
			if count < 1 {
				return fmt.Errorf("--count must be at least 1")
			}
			at := a.Now()
			if from != "" {
				t, err := time.Parse(time.RFC3339, from)
				if err != nil {
					return fmt.Errorf("--from: want RFC 3339 such as 2025-03-08T00:00:00Z: %w", err)
				}
				at = t
			}
			p, err := a.LoadPolicy(policyPath)
			if err != nil {
				return err
			}
			cal, err := scheduler.NewCalendar(p.Windows, p.Blackouts)
			if err != nil {
				return err
			}
			ws := cal.Next(at, count)
			if output == "json" {
				out := make([]windowJSON, 0, len(ws))
				for _, w := range ws {
					out = append(out, windowJSON{
						Window: w.Name, Start: w.Start.Format(time.RFC3339), End: w.End.Format(time.RFC3339),
						RebootUntil: w.RebootUntil.Format(time.RFC3339), Timezone: w.Location.String(),
					})
				}
				return WriteJSON(a.Stdout, out)
			}
			if len(ws) == 0 {
				fmt.Fprintln(a.Stdout, "no window within the next six years")
				return nil
			}
			tw := tabwriter.NewWriter(a.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "WINDOW\tSTART (LOCAL)\tEND (LOCAL)\tSTART (UTC)\tEND (UTC)\tREBOOTS UNTIL (UTC)")
			const local = "Mon 2006-01-02 15:04 MST (-07:00)"
			const utc = "2006-01-02 15:04Z"
			for _, w := range ws {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", w.Name, w.Start.Format(local), w.End.Format(local),
					w.Start.UTC().Format(utc), w.End.UTC().Format(utc), w.RebootUntil.UTC().Format(utc))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&policyPath, "policy", "", "policy file (default: the search order, or the built-in default)")
	cmd.Flags().StringVar(&from, "from", "", "list windows ending after this instant (RFC 3339; default now)")
	cmd.Flags().IntVar(&count, "count", 5, "how many windows")
	cmd.Flags().StringVarP(&output, "output", "o", "text", "text or json")
	return cmd
}
