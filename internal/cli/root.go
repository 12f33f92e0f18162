// Package cli holds offpeak's cobra commands. Each command lives in its own
// file and is wired into the tree by addCommands.
package cli

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/offpeak/offpeak/internal/logging"
	"github.com/offpeak/offpeak/internal/paths"
	"github.com/offpeak/offpeak/scheduler"
)

// App carries what every command needs; tests build one with their own
// writers, root and clock.
type App struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	Root   string // --root; see paths.EnvRoot
	Now    func() time.Time
	Logger *slog.Logger
	// Exe is the path of the offpeak binary, re-executed to serve built-in
	// plugins. Empty means os.Executable().
	Exe      string
	LogLevel string
	// Rebooter replaces the real reboot (logind, then systemctl); tests
	// set it so nothing reboots the machine running them.
	Rebooter scheduler.Rebooter
}

// Layout resolves well-known paths below the root.
func (a *App) Layout() paths.Layout { return paths.FromEnv(a.Root) }

// ExitError carries a specific exit status (validate exits 1 on a bad policy).
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit status %d", e.Code)
	}
	return e.Err.Error()
}
func (e *ExitError) Unwrap() error { return e.Err }

// errSilent marks an error already reported to the user.
var errSilent = errors.New("reported")

// Main runs the CLI and returns the process exit status.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	app := &App{Stdin: stdin, Stdout: stdout, Stderr: stderr, Now: time.Now}
	return app.Run(ctx, args)
}

// Run executes one command line.
func (a *App) Run(ctx context.Context, args []string) int {
	return a.execute(ctx, a.NewRootCmd(), args)
}

// RunCommand runs cmd as the root of a companion binary (offpeak-simulate):
// it gets offpeak's global flags, logging and exit statuses.
func (a *App) RunCommand(ctx context.Context, cmd *cobra.Command, args []string) int {
	a.setupRoot(cmd)
	return a.execute(ctx, cmd, args)
}

func (a *App) execute(ctx context.Context, root *cobra.Command, args []string) int {
	root.SetArgs(args)
	root.SetIn(a.Stdin)
	root.SetOut(a.Stdout)
	root.SetErr(a.Stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		if ee.Err != nil && !errors.Is(ee.Err, errSilent) {
			fmt.Fprintf(a.Stderr, "%s: %v\n", root.Name(), ee.Err)
		}
		return ee.Code
	}
	if !errors.Is(err, errSilent) {
		fmt.Fprintf(a.Stderr, "%s: %v\n", root.Name(), err)
	}
	return 2
}

// NewRootCmd builds the command tree.
func (a *App) NewRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "offpeak",
		Short: "Reboot hosts only inside maintenance windows, holding a cluster slot, after health checks",
	}
	a.setupRoot(root)
	a.addCommands(root)
	return root
}

// setupRoot gives a root command offpeak's global flags and per-run setup.
func (a *App) setupRoot(root *cobra.Command) {
	root.SilenceUsage = true
	root.SilenceErrors = true
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		if a.Logger == nil {
			a.Logger = newLogger(a.Stderr, a.LogLevel)
		}
		if a.Now == nil {
			a.Now = time.Now
		}
		return nil
	}
	// --version prints what `offpeak version` prints.
	v := buildInfo()
	root.Version = v.Version
	root.SetVersionTemplate(strings.ReplaceAll(versionText(root.Name(), v), "{{", "{{`{{`}}"))
	root.PersistentFlags().StringVar(&a.Root, "root", a.Root, "treat DIR as / for every file offpeak reads or writes (also $"+paths.EnvRoot+")")
	root.PersistentFlags().StringVar(&a.LogLevel, "log-level", cmp.Or(a.LogLevel, "info"), "debug, info, warn or error")
}

func newLogger(w io.Writer, level string) *slog.Logger {
	return logging.New(w, level)
}

// exe returns the binary to re-execute for built-in plugins.
func (a *App) exe() (string, error) {
	if a.Exe != "" {
		return a.Exe, nil
	}
	return os.Executable()
}

// addCommands wires every command. Keep one line per command.
func (a *App) addCommands(root *cobra.Command) {
	root.AddCommand(newNextCmd(a))
	root.AddCommand(newPolicyCmd(a))
	root.AddCommand(newAgentCmd(a))
	root.AddCommand(newCheckCmd(a))
	root.AddCommand(newStatusCmd(a))
	root.AddCommand(newPluginCmd(a))
	root.AddCommand(newPluginsCmd(a))
	root.AddCommand(newSystemdCmd(a))
	root.AddCommand(newLocksCmd(a))
	root.AddCommand(newFleetlockCmd(a))
	root.AddCommand(newInstallCmd(a))
	root.AddCommand(newSimulateCmd(a))
	root.AddCommand(newVersionCmd(a))
	root.AddCommand(newMigrateCmd(a))
}
