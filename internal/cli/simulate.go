package cli

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
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
// --help documents the flags, and it completes them.
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
		// With flag parsing off, cobra leaves flags to this function too.
		ValidArgsFunction: func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
			return a.completeCompanion(cmd, SimulateBinary, args, toComplete)
		},
	}
}

// runCompanion runs a companion binary with args, stdio passed through,
// and exits with its status. A SIGINT or SIGTERM that cancels the context
// reaches the child as SIGTERM, so it can stop and report; if offpeak dies,
// the kernel sends the child SIGTERM.
func (a *App) runCompanion(cmd *cobra.Command, name string, args []string) error {
	path, err := a.findCompanion(name)
	if err != nil {
		return err
	}
	c := exec.CommandContext(cmd.Context(), path, args...)
	c.Stdin, c.Stdout, c.Stderr = a.Stdin, a.Stdout, a.Stderr
	c.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	c.Cancel = func() error { return c.Process.Signal(syscall.SIGTERM) }
	c.WaitDelay = 30 * time.Second
	err = c.Run()
	if c.ProcessState != nil && c.ProcessState.Success() {
		return nil // finished, even if a signal arrived meanwhile
	}
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) {
		return fmt.Errorf("%s: %w", path, err)
	}
	if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return &ExitError{Code: 128 + int(ws.Signal()), Err: fmt.Errorf("%s killed by signal %s", name, ws.Signal())}
	}
	// The child has reported its own error.
	return &ExitError{Code: exitErr.ExitCode(), Err: errSilent}
}

// completeCompanion asks the companion for completions through cobra's
// hidden __complete command and passes its answer on.
func (a *App) completeCompanion(cmd *cobra.Command, name string, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	path, err := a.findCompanion(name)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	argv := append(append([]string{cobra.ShellCompRequestCmd}, args...), toComplete)
	out, err := exec.CommandContext(cmd.Context(), path, argv...).Output()
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	var comps []cobra.Completion
	directive := cobra.ShellCompDirectiveDefault
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		if d, ok := strings.CutPrefix(line, ":"); ok {
			if n, err := strconv.Atoi(d); err == nil {
				directive = cobra.ShellCompDirective(n)
			}
			continue
		}
		comps = append(comps, line)
	}
	return comps, directive
}

// findCompanion looks for name next to the running offpeak binary, then on
// $PATH.
func (a *App) findCompanion(name string) (string, error) {
	exe, err := a.exe()
	if err == nil {
		p := filepath.Join(filepath.Dir(exe), name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			if fi.Mode()&0o111 == 0 {
				return "", fmt.Errorf("%s is not executable", p)
			}
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
