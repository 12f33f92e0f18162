package cli

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/BurntSushi/toml"
	"github.com/spf13/cobra"

	"github.com/offpeak/offpeak/internal/builtin"
	"github.com/offpeak/offpeak/internal/policyload"
)

func newPolicyCmd(a *App) *cobra.Command {
	cmd := &cobra.Command{Use: "policy", Short: "Validate or print the effective policy"}
	var policyPath string
	validate := &cobra.Command{
		Use:   "validate",
		Short: "Check the policy; exit 1 with one line per error (FILE:LINE: key: message)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p, err := a.LoadPolicy(policyPath)
			if err != nil {
				var errs policyload.Errors
				if errors.As(err, &errs) {
					for _, e := range errs {
						fmt.Fprintln(a.Stdout, e.Error())
					}
					return &ExitError{Code: 1, Err: errSilent}
				}
				return &ExitError{Code: 1, Err: err}
			}
			src := "built-in default (no policy file found)"
			if len(p.Sources) > 0 {
				src = fmt.Sprint(p.Sources)
			}
			fmt.Fprintf(a.Stdout, "policy is valid: %s\n", src)
			return nil
		},
	}
	validate.Flags().StringVar(&policyPath, "policy", "", "policy file (default: the search order)")

	var showPath, output string
	show := &cobra.Command{
		Use:   "show",
		Short: "Print the effective policy after merging every file",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := CheckOutput(output, "toml", "json"); err != nil {
				return err
			}
			p, err := a.LoadPolicy(showPath)
			if err != nil {
				return err
			}
			redacted := policyload.Redacted(p, builtin.New().SecretKeys)
			if output == "json" {
				return WriteJSON(a.Stdout, redacted)
			}
			var buf bytes.Buffer
			if len(p.Sources) == 0 {
				buf.WriteString("# effective policy: built-in default (no policy file found)\n")
			} else {
				for _, s := range p.Sources {
					fmt.Fprintf(&buf, "# merged from %s\n", s)
				}
			}
			if err := toml.NewEncoder(&buf).Encode(redacted); err != nil {
				return err
			}
			_, err = a.Stdout.Write(buf.Bytes())
			return err
		},
	}
	show.Flags().StringVar(&showPath, "policy", "", "policy file (default: the search order)")
	show.Flags().StringVarP(&output, "output", "o", "toml", "toml or json")
	cmd.AddCommand(validate, show)
	return cmd
}
