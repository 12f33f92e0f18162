package cli

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"
)

// SimulateBinary is the companion binary that implements `offpeak simulate`.
// The simulator links an embedded etcd server, which would add about 10 MB
// to the binary every host runs and most of that to the idle agent's
// resident memory, so it ships as a separate binary.
const SimulateBinary = "offpeak-simulate"

// newSimulateCmd runs offpeak-simulate with the arguments as given; its own
// --help documents the flags.
func newSimulateCmd(a *App) *cobra.Command {
	return &cobra.Command{
		Use:   "simulate [flags]",
		Short: "Simulate a fleet rollout on virtual time with the real scheduler and locker",
		Long: `Simulate a rollout of N real agents against a real locker on virtual time, and
report the makespan against the ideal, slot hand-offs and an invariant report.

This runs the separate binary ` + SimulateBinary + ` (found next to offpeak, then on
$PATH) with the same arguments; "make" builds both. See "` + SimulateBinary + ` --help"
for the flags.`,
		Example:            `  offpeak simulate --policy examples/weeknights.toml --nodes 1000 --slots 10 --reboot-time 2m --locker etcd --compare fleetlock-poll`,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.runCompanion(cmd, SimulateBinary, args)
		},
	}
}

// runCompanion runs a companion binary with args, stdio passed through,
// and exits with its status. A SIGINT or SIGTERM that cancels the context
// reaches the child as SIGTERM, so it can stop and report.
func (a *App) runCompanion(cmd *cobra.Command, name string, args []string) error {
	path, err := a.findCompanion(name)
	if err != nil {
		return err
	}
	c := exec.CommandContext(cmd.Context(), path, args...)
	c.Stdin, c.Stdout, c.Stderr = a.Stdin, a.Stdout, a.Stderr
	c.Cancel = func() error { return c.Process.Signal(syscall.SIGTERM) }
	c.WaitDelay = 30 * time.Second
	err = c.Run()
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &exitErr):
		code := exitErr.ExitCode()
		if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = 128 + int(ws.Signal())
		}
		// The child has reported its own error.
		return &ExitError{Code: code, Err: errSilent}
	default:
		return fmt.Errorf("%s: %w", path, err)
	}
}

// findCompanion looks for name next to the running offpeak binary, then on
// $PATH.
func (a *App) findCompanion(name string) (string, error) {
	exe, err := a.exe()
	if err == nil {
		p := filepath.Join(filepath.Dir(exe), name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	where := "on $PATH"
	if exe != "" {
		where = "next to " + exe + " and on $PATH"
	}
	return "", fmt.Errorf("%s is not installed (looked %s): build it with \"make\" or \"go build -o DIR ./cmd/%s\", or run \"go run ./cmd/%s\"",
		name, where, name, name)
}
