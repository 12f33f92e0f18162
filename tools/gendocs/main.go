// Command gendocs writes offpeak's man pages or Markdown reference:
//
//	go run ./tools/gendocs man build/man/man1
//	go run ./tools/gendocs markdown DIR
//
// The tree is offpeak's with the full simulate command in place of the stub
// that runs offpeak-simulate, so its page documents every flag.
package main

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/offpeak/offpeak/internal/cli"
	"github.com/offpeak/offpeak/internal/docgen"
	"github.com/offpeak/offpeak/internal/simulate/simcmd"
)

func main() {
	if err := run(os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "gendocs:", err)
		os.Exit(2)
	}
}

func run(args []string, stderr io.Writer) error {
	if len(args) != 2 || !slices.Contains(docgen.Formats(), args[0]) {
		return fmt.Errorf("usage: gendocs %s DIR", strings.Join(docgen.Formats(), "|"))
	}
	return docgen.Write(tree(stderr), args[0], args[1])
}

// tree is the command tree the pages describe.
func tree(stderr io.Writer) *cobra.Command {
	a := &cli.App{Stdin: strings.NewReader(""), Stdout: io.Discard, Stderr: stderr, Now: time.Now}
	root := a.NewRootCmd()
	for _, c := range root.Commands() {
		if c.Name() == "simulate" {
			root.RemoveCommand(c)
		}
	}
	root.AddCommand(simcmd.New(a))
	// Execute adds these; the pages document them too.
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	return root
}
