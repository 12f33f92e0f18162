package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/offpeak/offpeak/internal/version"
	"github.com/offpeak/offpeak/plugins"
)

// versionJSON is the shape of `offpeak version --output json`.
type versionJSON struct {
	version.Info
	PluginProtocol int `json:"plugin_protocol"`
}

func buildInfo() versionJSON {
	return versionJSON{Info: version.Get(), PluginProtocol: plugins.ProtocolVersion}
}

// versionText is what `offpeak version` and `offpeak --version` print.
func versionText(name string, v versionJSON) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s\n", name, v.Version)
	row := func(k, val string) {
		if val != "" {
			fmt.Fprintf(&b, "  %-16s %s\n", k+":", val)
		}
	}
	commit := v.Commit
	if commit != "" && v.Modified {
		commit += " (modified)"
	}
	row("commit", commit)
	row("commit date", v.CommitDate)
	row("build date", v.BuildDate)
	row("go", v.GoVersion+" "+v.Platform)
	row("plugin protocol", fmt.Sprint(v.PluginProtocol))
	return b.String()
}

func newVersionCmd(a *App) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit, build date, Go version and plugin protocol",
		Long: "Print the version, VCS commit, build date, Go version and plugin protocol version\n" +
			"of this binary. `make` stamps the version, commit and build date; a plain `go build`\n" +
			"in a checkout reports what the Go toolchain recorded, and \"devel\" when it recorded\n" +
			"nothing. Built-in plugins report the same version in `offpeak plugins list`.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := CheckOutput(output, "text", "json"); err != nil {
				return err
			}
			v := buildInfo()
			if output == "json" {
				return WriteJSON(a.Stdout, v)
			}
			_, err := fmt.Fprint(a.Stdout, versionText(cmd.Root().Name(), v))
			return err
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "text or json")
	return cmd
}
