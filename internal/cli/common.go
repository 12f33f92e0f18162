package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/offpeak/offpeak/internal/builtin"
	"github.com/offpeak/offpeak/internal/installers"
	"github.com/offpeak/offpeak/internal/policy"
	"github.com/offpeak/offpeak/internal/redact"
)

// policyOptions returns the options Load needs, including the config schemas
// of the built-in plugins so their settings are checked with file and line.
func (a *App) policyOptions(path string) policy.Options {
	reg := builtin.New()
	return policy.Options{
		Path:   path,
		Layout: a.Layout(),
		Now:    a.Now(),
		PluginConfig: func(kind, name string) any {
			switch kind {
			case "locker":
				if l, ok := reg.Lockers[name]; ok && l.Config != nil {
					return l.Config()
				}
			case "check":
				if c, ok := reg.Checks[name]; ok && c.Config != nil {
					return c.Config()
				}
			case "installer":
				return installers.Config(name)
			}
			return nil
		},
	}
}

// secretKeys returns the keys a built-in plugin's config schema declares
// secret (nil for a third-party plugin, whose settings are redacted by
// name and shape only).
func (a *App) secretKeys(kind, name string) []string {
	return redact.KeysOf(a.policyOptions("").PluginConfig(kind, name))
}

// LoadPolicy loads the policy named by --policy, or the search order.
func (a *App) LoadPolicy(path string) (*policy.Policy, error) {
	return policy.Load(a.policyOptions(path))
}

// CheckOutput validates an --output value.
func CheckOutput(v string, allowed ...string) error {
	for _, a := range allowed {
		if v == a {
			return nil
		}
	}
	return fmt.Errorf("--output must be one of %s, not %q", strings.Join(allowed, ", "), v)
}

// WriteJSON prints v as indented JSON, the format of every --output json.
func WriteJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
