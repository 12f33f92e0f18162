// Package simcmd is the command line of offpeak-simulate. It lives outside
// internal/cli so that the embedded etcd server the simulator links stays
// out of the agent's binary; `offpeak simulate` runs offpeak-simulate.
package simcmd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/offpeak/offpeak/internal/cli"
	"github.com/offpeak/offpeak/internal/simulate"
)

// Main runs offpeak-simulate with args (without the program name) and
// returns its exit status.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	a := &cli.App{Stdin: stdin, Stdout: stdout, Stderr: stderr, Now: time.Now}
	cmd := New(a)
	cmd.Use = "offpeak-simulate"
	return a.RunCommand(ctx, cmd, args)
}

type simulateFlags struct {
	policyPath, locker, baseline, compare, from, until, faults, output, svg string
	nodes, groups, slots, rounds                                            int
	rebootTime, rebootJitter, pollInterval                                  time.Duration
	seed                                                                    uint64
}

// New returns the simulate command; tools/gendocs puts it in place of
// offpeak's stub so the manual documents its flags.
func New(a *cli.App) *cobra.Command {
	var f simulateFlags
	cmd := &cobra.Command{
		Use:   "simulate",
		Short: "Simulate a fleet rollout on virtual time with the real scheduler and locker",
		Long: `Simulate a rollout: N real agents in one process, each with its own fake clock and
in-memory state, all staged at --from, against a real locker (a file directory, or
an embedded etcd on loopback). Node i is in group i mod --groups. A reboot takes
--reboot-time (plus up to --reboot-jitter), then the node boots, passes its post-boot
checks after the policy's grace and gives its slot back; a freed slot wakes the nodes
waiting in that group at once, as the agent's watch does.

--baseline fleetlock-poll runs the same fleet as FleetLock clients of an offpeak
FleetLock server (HTTP on loopback, backed by the chosen locker), without a watch:
waiting nodes ask again every --poll-interval. --compare fleetlock-poll runs the
baseline after the main run and prints both side by side.

The report gives the makespan (first staged to last node confirmed) against the ideal
(ceil(nodes/slots) cycles of reboot time + grace packed greedily into the windows),
slot hand-off gaps, reboots per window, the most holders an independent watcher saw
per group, lock requests per node, and an invariant report; any violation exits 1.

The simulator is the separate binary offpeak-simulate ("offpeak simulate" runs it), so
the embedded etcd server stays out of the binary every host runs.

` + simulate.FaultsHelp,
		Example: `  offpeak simulate --policy examples/weeknights.toml --nodes 1000 --slots 10 --reboot-time 2m --locker etcd --compare fleetlock-poll
  offpeak simulate --policy examples/weeknights.toml --nodes 1000 --slots 10 --locker etcd --rounds 5 \
      --faults kill=0.05,outage=30m@2,postboot-fail=0.02,clockjump=10m@3 --svg chaos.svg`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runSimulate(a, cmd, f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.policyPath, "policy", "", "policy file (default: the search order, or the built-in default)")
	fl.IntVar(&f.nodes, "nodes", 100, "number of nodes")
	fl.IntVar(&f.groups, "groups", 1, "number of groups; node i is in group i mod groups")
	fl.IntVar(&f.slots, "slots", 0, "slots per group (default: the policy's lock.slots)")
	fl.DurationVar(&f.rebootTime, "reboot-time", 2*time.Minute, "how long a reboot takes, request to boot")
	fl.DurationVar(&f.rebootJitter, "reboot-jitter", 0, "add a uniform random 0..DUR to each reboot")
	fl.StringVar(&f.locker, "locker", "", "file or etcd (default: the policy's lock.plugin when it is one of them, else file)")
	fl.StringVar(&f.baseline, "baseline", "", "run the baseline instead: fleetlock-poll")
	fl.StringVar(&f.compare, "compare", "", "run this baseline after the main run and compare: fleetlock-poll")
	fl.DurationVar(&f.pollInterval, "poll-interval", simulate.DefaultPollInterval, "how often a FleetLock client asks again (baseline)")
	fl.StringVar(&f.from, "from", "", "when the update is staged (RFC 3339; default an hour before the first window after 2026-06-01)")
	fl.StringVar(&f.until, "until", "", "stop the simulation at this instant (RFC 3339; default when every node is confirmed)")
	fl.StringVar(&f.faults, "faults", "", "faults to inject, e.g. kill=0.05,outage=30m@2,postboot-fail=0.02,clockjump=10m@3 (see above)")
	fl.Uint64Var(&f.seed, "seed", 1, "random seed; a seed gives one result")
	fl.IntVar(&f.rounds, "rounds", 1, "stage the update this many times, each round after the previous one finished")
	fl.StringVarP(&f.output, "output", "o", "text", "text or json")
	fl.StringVar(&f.svg, "svg", "", "write a timeline of the (main) run to this SVG file")
	return cmd
}

func runSimulate(a *cli.App, cmd *cobra.Command, f simulateFlags) error {
	if err := cli.CheckOutput(f.output, "text", "json"); err != nil {
		return err
	}
	if f.baseline != "" && f.compare != "" {
		return errors.New("--baseline and --compare exclude each other")
	}
	for _, v := range []struct{ flag, val string }{{"--baseline", f.baseline}, {"--compare", f.compare}} {
		if v.val != "" && v.val != simulate.BaselineFleetlockPoll {
			return fmt.Errorf("%s must be %s, not %q", v.flag, simulate.BaselineFleetlockPoll, v.val)
		}
	}
	p, err := a.LoadPolicy(f.policyPath)
	if err != nil {
		return err
	}
	faults, err := simulate.ParseFaults(f.faults)
	if err != nil {
		return fmt.Errorf("--faults: %w", err)
	}
	cfg := simulate.Config{
		Policy: p, PolicyName: policyName(f.policyPath), Nodes: f.nodes, Groups: f.groups, Slots: f.slots,
		RebootTime: f.rebootTime, RebootJitter: f.rebootJitter, Locker: f.locker, Baseline: f.baseline,
		PollInterval: f.pollInterval, Faults: faults, Seed: f.seed, Rounds: f.rounds, Logger: a.Logger,
	}
	if cfg.Locker == "" && (p.Lock.Plugin == "file" || p.Lock.Plugin == "etcd") {
		cfg.Locker = p.Lock.Plugin
	}
	for _, v := range []struct {
		flag string
		val  string
		dst  *time.Time
	}{{"--from", f.from, &cfg.From}, {"--until", f.until, &cfg.Until}} {
		if v.val == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339, v.val)
		if err != nil {
			return fmt.Errorf("%s: want RFC 3339 such as 2026-06-01T23:00:00Z: %w", v.flag, err)
		}
		*v.dst = t
	}
	ctx := cmd.Context()
	main, err := simulate.Run(ctx, cfg)
	if err != nil {
		return err
	}
	if f.svg != "" {
		var buf bytes.Buffer
		if err := main.WriteSVG(&buf); err != nil {
			return fmt.Errorf("--svg: %w", err)
		}
		if err := os.WriteFile(f.svg, buf.Bytes(), 0o644); err != nil {
			return fmt.Errorf("--svg: %w", err)
		}
	}
	violations := main.Violations
	if f.compare == "" {
		if f.output == "json" {
			err = cli.WriteJSON(a.Stdout, main)
		} else {
			err = main.WriteText(a.Stdout)
		}
	} else {
		bcfg := cfg
		bcfg.Baseline = f.compare
		base, berr := simulate.Run(ctx, bcfg)
		if berr != nil {
			return fmt.Errorf("baseline: %w", berr)
		}
		c := simulate.Comparison{Offpeak: main, Baseline: base}
		violations = c.Violations()
		if f.output == "json" {
			err = cli.WriteJSON(a.Stdout, c)
		} else {
			err = c.WriteText(a.Stdout)
		}
	}
	if err != nil {
		return err
	}
	if violations > 0 {
		return &cli.ExitError{Code: 1, Err: fmt.Errorf("%d invariant violation(s)", violations)}
	}
	return nil
}

func policyName(path string) string {
	if path == "" {
		return "(search order)"
	}
	return path
}
