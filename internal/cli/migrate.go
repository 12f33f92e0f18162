package cli

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/offpeak/offpeak/internal/migrate"
	"github.com/offpeak/offpeak/internal/policyload"
	"github.com/offpeak/offpeak/internal/statefile"
)

// maxMigrateInput bounds one source file: configuration, not data.
const maxMigrateInput = 4 << 20

func newMigrateCmd(a *App) *cobra.Command {
	var timezone, outFile string
	var force bool
	var sources strings.Builder
	for _, t := range migrate.Tools() {
		fmt.Fprintf(&sources, "  %-10s %s\n", t.Name, t.Files)
	}
	cmd := &cobra.Command{
		Use:   "migrate locksmith|zincati|kured FILE...",
		Short: "Turn a locksmith, zincati or kured configuration into an offpeak policy",
		Long: "Read the configuration of the reboot manager offpeak replaces and print an offpeak\n" +
			"policy (TOML). A comment above each setting names the source file and line it came\n" +
			"from; settings offpeak has no equivalent for are listed at the end, and the notes at\n" +
			"the top say where the two differ (clock changes, locks, staging) and what to do\n" +
			"before switching over. Both lists are also printed on standard error. The policy is\n" +
			"validated before it is printed; nothing is written when a source cannot be read.\n\n" +
			"Sources:\n" + sources.String() + "\n" +
			"kured flags files hold kured's arguments as on its command line, any number per\n" +
			"line (--reboot-days=mon,fri --start-time 22:00), # comments, and KURED_NAME=value\n" +
			"lines for its environment variables (which override flags, as in kured).\n\n" +
			"locksmith reads its reboot window in the host's local time, zincati's\n" +
			"time_zone = \"localtime\" and kured's --time-zone=Local too. A policy names its zone:\n" +
			"--timezone gives it (default UTC), and the output says which zone it used.",
		Example: "  offpeak migrate locksmith /usr/share/flatcar/update.conf /etc/flatcar/update.conf --timezone Europe/Berlin\n" +
			"  offpeak migrate zincati /usr/lib/zincati/config.d /etc/zincati/config.d --output-file /etc/offpeak/policy.toml\n" +
			"  offpeak migrate kured kured-ds.yaml",
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			tool, err := migrate.Lookup(args[0])
			if err != nil {
				return err
			}
			srcs, err := readMigrateSources(tool.Name, args[1:])
			if err != nil {
				return err
			}
			res, err := tool.Migrate(srcs, migrate.Options{Timezone: timezone, Now: a.Now()})
			if err != nil {
				return err
			}
			// The policy must load as written; a failure here is offpeak's bug.
			if _, err := policyload.Parse("(migrated policy)", res.Policy, a.policyOptions("")); err != nil {
				return fmt.Errorf("the migrated policy does not validate (please report this): %w", err)
			}
			if outFile != "" {
				if err := writeNew(outFile, res.Policy, force); err != nil {
					return err
				}
			} else if _, err := a.Stdout.Write(res.Policy); err != nil {
				return err
			}
			printMigrateNotes(a.Stderr, res, outFile)
			return nil
		},
	}
	cmd.Flags().StringVar(&timezone, "timezone", "", "IANA zone for times the source read in the host's local zone (default UTC)")
	cmd.Flags().StringVar(&outFile, "output-file", "", "write the policy to FILE instead of standard output")
	cmd.Flags().BoolVar(&force, "force", false, "with --output-file, replace an existing file")
	return cmd
}

// readMigrateSources reads FILE arguments; zincati's may be directories,
// read as zincati reads them (*.toml, by name).
func readMigrateSources(tool string, args []string) ([]migrate.Source, error) {
	var srcs []migrate.Source
	for _, arg := range args {
		fi, err := os.Stat(arg)
		if err != nil {
			return nil, err
		}
		files := []string{arg}
		if fi.IsDir() {
			if tool != "zincati" {
				return nil, fmt.Errorf("%s: a directory; %s takes files", arg, tool)
			}
			ents, err := os.ReadDir(arg)
			if err != nil {
				return nil, err
			}
			files = nil
			for _, e := range ents {
				if strings.HasSuffix(e.Name(), ".toml") && !e.IsDir() {
					files = append(files, filepath.Join(arg, e.Name()))
				}
			}
			slices.Sort(files)
		}
		for _, f := range files {
			b, err := readBounded(f)
			if err != nil {
				return nil, err
			}
			srcs = append(srcs, migrate.Source{Name: f, Data: b})
		}
	}
	return srcs, nil
}

func readBounded(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxMigrateInput+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(b) > maxMigrateInput {
		return nil, fmt.Errorf("%s: larger than %d MiB; not a configuration file", name, maxMigrateInput>>20)
	}
	return b, nil
}

// writeNew writes a policy file atomically, refusing to replace one unless
// told to.
func writeNew(name string, data []byte, force bool) error {
	if _, err := os.Lstat(name); err == nil && !force {
		return fmt.Errorf("%s exists; choose another --output-file or add --force", name)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return statefile.WriteAtomic(name, data, 0o644)
}

func printMigrateNotes(w io.Writer, res *migrate.Result, outFile string) {
	for _, n := range res.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	for _, n := range res.Unmapped {
		fmt.Fprintf(w, "no equivalent: %s\n", n)
	}
	if outFile != "" {
		fmt.Fprintf(w, "wrote %s; check it with: offpeak policy validate --policy %s && offpeak next --policy %s\n", outFile, outFile, outFile)
	}
}
