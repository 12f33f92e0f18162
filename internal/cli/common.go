package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/offpeak/offpeak/internal/builtin"
	"github.com/offpeak/offpeak/internal/policyload"
	"github.com/offpeak/offpeak/scheduler/policy"
)

// policyOptions returns the options Load needs, including the built-in
// plugins so their settings are checked with file and line.
func (a *App) policyOptions(path string) policyload.Options {
	return policyload.Options{Path: path, Layout: a.Layout(), Now: a.Now(), Builtins: builtin.New()}
}

// LoadPolicy loads the policy named by --policy, or the search order.
func (a *App) LoadPolicy(path string) (*policy.Policy, error) {
	return policyload.Load(a.policyOptions(path))
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
