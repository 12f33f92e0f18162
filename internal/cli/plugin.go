package cli

import (
	"fmt"
	"log/slog"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/offpeak/offpeak/internal/builtin"
	"github.com/offpeak/offpeak/internal/paths"
	"github.com/offpeak/offpeak/internal/pluginhost"
	"github.com/offpeak/offpeak/internal/registry"
	"github.com/offpeak/offpeak/internal/version"
	"github.com/offpeak/offpeak/plugins"
	"github.com/offpeak/offpeak/scheduler/policy"
)

// pluginManager builds the plugin host for this invocation: plugin dirs
// below --root, built-ins served by re-executing this binary, and the
// policy's [plugins.<name>] sha256 pins (pol may be nil).
func (a *App) pluginManager(pol *policy.Policy) (*pluginhost.Manager, error) {
	exe, err := a.exe()
	if err != nil {
		return nil, fmt.Errorf("locating the offpeak binary to serve built-in plugins: %w", err)
	}
	pins := map[string]string{}
	var callTimeout time.Duration
	if pol != nil {
		for name, pin := range pol.Plugins {
			pins[name] = pin.SHA256
		}
		// The default for calls whose context carries no deadline.
		callTimeout = pol.Lock.Timeout.D()
	}
	var env []string
	if a.Root != "" {
		// Built-ins must see the same root as the command that runs them.
		env = append(env, paths.EnvRoot+"="+a.Root)
	}
	return pluginhost.New(pluginhost.Options{
		Dirs:        a.Layout().PluginDirs(),
		Exe:         exe,
		Builtins:    builtin.New().PluginKinds(),
		Pins:        pins,
		Env:         env,
		Logger:      a.Logger,
		Now:         a.Now,
		CallTimeout: callTimeout,
	}), nil
}

// newPluginCmd is the hidden `offpeak plugin serve KIND NAME` that the plugin
// host runs to serve a built-in locker or check over the plugin protocol.
func newPluginCmd(a *App) *cobra.Command {
	cmd := &cobra.Command{Use: "plugin", Hidden: true, Short: "Serve a built-in plugin (run by offpeak itself)"}
	serve := &cobra.Command{
		Use:   "serve KIND NAME",
		Short: "Serve the built-in locker or check NAME over the plugin protocol",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			kind, name := plugins.Kind(args[0]), args[1]
			reg := builtin.New()
			// Everything goes to the host, whose own log level filters it.
			env := registry.Env{Log: plugins.NewLogger(a.Stderr, slog.LevelDebug).With("builtin", name), Root: a.Layout().Root, Join: a.Layout().Join}
			opts := plugins.ServeOpts{Name: name, Version: version.Get().Version}
			var (
				ok      bool
				err     error
				cleanup func()
			)
			switch kind {
			case plugins.KindLocker:
				opts.Locker, cleanup, ok, err = reg.Lockers.New(cmd.Context(), name, env)
			case plugins.KindCheck:
				opts.HealthCheck, cleanup, ok, err = reg.Checks.New(cmd.Context(), name, env)
			default:
				return fmt.Errorf("KIND must be %s or %s, not %q", plugins.KindLocker, plugins.KindCheck, kind)
			}
			if !ok {
				return fmt.Errorf("no built-in %s %q (built-in %ss: %s)", kind, name, kind, strings.Join(reg.PluginKinds()[kind], ", "))
			}
			defer cleanup()
			if err != nil {
				return err
			}
			return plugins.Serve(opts)
		},
	}
	cmd.AddCommand(serve)
	return cmd
}

// newPluginsCmd is `offpeak plugins list`.
func newPluginsCmd(a *App) *cobra.Command {
	cmd := &cobra.Command{Use: "plugins", Short: "Inspect built-in and installed plugins"}
	var output, policyPath string
	list := &cobra.Command{
		Use:   "list",
		Short: "List every plugin, start each one and show whether it answers the handshake",
		Long: "List the built-in plugins and the offpeak-plugin-<name> executables in\n" +
			strings.Join(paths.Layout{}.PluginDirs(), " and ") + " (below --root), with their\n" +
			"kinds, SHA-256 (for [plugins.<name>] sha256 = \"…\" in the policy), protocol\n" +
			"version and whether they completed a handshake. Pins from the policy apply.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := CheckOutput(output, "text", "json"); err != nil {
				return err
			}
			pol, err := a.LoadPolicy(policyPath)
			if err != nil {
				a.Logger.Warn("policy not loaded; listing without its pins", "error", err)
				pol = nil
			}
			m, err := a.pluginManager(pol)
			if err != nil {
				return err
			}
			defer m.Close()
			infos, err := m.List(cmd.Context())
			if err != nil {
				return err
			}
			if infos == nil {
				infos = []pluginhost.PluginInfo{}
			}
			if output == "json" {
				return WriteJSON(a.Stdout, infos)
			}
			return writePluginTable(a, infos)
		},
	}
	list.Flags().StringVarP(&output, "output", "o", "text", "text or json")
	list.Flags().StringVar(&policyPath, "policy", "", "policy file for sha256 pins (default: the search order)")
	cmd.AddCommand(list)
	return cmd
}

func writePluginTable(a *App, infos []pluginhost.PluginInfo) error {
	tw := tabwriter.NewWriter(a.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tKINDS\tSOURCE\tANSWERED\tPROTOCOL\tVERSION\tSHA256\tPATH")
	var notes []string
	for _, p := range infos {
		kinds := make([]string, 0, len(p.Kinds))
		for _, k := range p.Kinds {
			kinds = append(kinds, string(k))
		}
		source := "installed"
		if p.Builtin {
			source = "built-in"
		}
		if p.Pinned {
			source += ",pinned"
		}
		if p.Refused {
			source += ",refused"
		}
		answered := "yes"
		if !p.Answered {
			answered = "no"
		}
		proto := "-"
		if p.ProtocolVersion != 0 {
			proto = fmt.Sprint(p.ProtocolVersion)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", dash(p.Name), dash(strings.Join(kinds, ",")), source, answered, proto, dash(p.Version), dash(p.SHA256), dash(p.Path))
		switch {
		case p.ShadowedBy != "":
			notes = append(notes, fmt.Sprintf("%s: %s is not used: shadowed by %s", p.Name, p.Path, p.ShadowedBy))
		case p.Error != "":
			notes = append(notes, fmt.Sprintf("%s: %s", dash(p.Name), p.Error))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, n := range notes {
		fmt.Fprintln(a.Stdout, n)
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
