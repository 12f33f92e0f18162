// Package docgen writes reference documentation for a cobra command tree.
// It is used at build time (tools/gendocs, make install), never by the
// offpeak binary, so the generators stay out of what every host runs.
package docgen

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// Formats lists what Write can produce.
func Formats() []string { return []string{"man", "markdown"} }

// Write writes one page per visible command of root into dir: man pages
// (section 1, dated by SOURCE_DATE_EPOCH when it is set) or Markdown. No page
// carries a generation stamp, so builds are reproducible.
func Write(root *cobra.Command, format, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("docs: %w", err)
	}
	root.DisableAutoGenTag = true
	switch format {
	case "man":
		header := &doc.GenManHeader{Title: "OFFPEAK", Section: "1", Source: "offpeak", Manual: "offpeak manual"}
		if err := doc.GenManTree(root, header, dir); err != nil {
			return fmt.Errorf("man pages: %w", err)
		}
	case "markdown":
		if err := doc.GenMarkdownTree(root, dir); err != nil {
			return fmt.Errorf("markdown: %w", err)
		}
	default:
		return fmt.Errorf("docs: format must be man or markdown, not %q", format)
	}
	return nil
}
