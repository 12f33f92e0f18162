package cli

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// newDocsCmd generates reference documentation from the command tree; it is
// hidden because only packaging (make install) needs it. Shell completions
// come from cobra's built-in `offpeak completion`.
func newDocsCmd(a *App) *cobra.Command {
	cmd := &cobra.Command{
		Use:    "docs",
		Short:  "Generate man pages or Markdown from the command tree",
		Hidden: true,
		Args:   cobra.NoArgs,
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "man DIR",
		Short: "Write a man page (section 1) per command into DIR; honours SOURCE_DATE_EPOCH",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			root, err := docsRoot(cmd, args[0])
			if err != nil {
				return err
			}
			header := &doc.GenManHeader{Title: "OFFPEAK", Section: "1", Source: "offpeak", Manual: "offpeak manual"}
			if err := doc.GenManTree(root, header, args[0]); err != nil {
				return fmt.Errorf("man pages: %w", err)
			}
			return nil
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "markdown DIR",
		Short: "Write a Markdown page per command into DIR",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			root, err := docsRoot(cmd, args[0])
			if err != nil {
				return err
			}
			if err := doc.GenMarkdownTree(root, args[0]); err != nil {
				return fmt.Errorf("markdown: %w", err)
			}
			return nil
		},
	})
	return cmd
}

// docsRoot prepares the tree for generation: the output directory exists
// and no page carries a generation date line, so builds are reproducible.
func docsRoot(cmd *cobra.Command, dir string) (*cobra.Command, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("docs: %w", err)
	}
	root := cmd.Root()
	root.DisableAutoGenTag = true
	return root, nil
}
