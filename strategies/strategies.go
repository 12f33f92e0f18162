// Package strategies names the five update strategies and the gates each one
// makes a staged update pass before the node reboots.
package strategies

import (
	"fmt"
	"strings"
)

// Gates says which checks a strategy applies. Pre-reboot health checks and
// the reboot budget apply to every strategy that reboots.
type Gates struct {
	Name string
	// Reboots is false for "off": stage only, never reboot.
	Reboots bool
	// Window: reboot only inside a maintenance window.
	Window bool
	// Lock: reboot only holding a slot of the node's group.
	Lock bool
	// LockOptional: when the locker cannot be reached, reboot without a slot
	// (best-effort). A locker that answers "no" is still obeyed.
	LockOptional bool
}

// The strategies' names, as the policy's strategy key spells them.
const (
	Off        = "off"
	Reboot     = "reboot"
	EtcdLock   = "etcd-lock"
	BestEffort = "best-effort"
	Window     = "window"
)

// all is the only list of strategies.
var all = []Gates{
	{Name: Off},
	{Name: Reboot, Reboots: true},
	{Name: EtcdLock, Reboots: true, Lock: true},
	{Name: BestEffort, Reboots: true, Lock: true, LockOptional: true},
	{Name: Window, Reboots: true, Window: true, Lock: true},
}

// Lookup returns the gates of a strategy.
func Lookup(name string) (Gates, error) {
	for _, g := range all {
		if g.Name == name {
			return g, nil
		}
	}
	return Gates{}, fmt.Errorf("unknown strategy %q (valid: %s)", name, strings.Join(Names(), ", "))
}

// Names lists the strategies.
func Names() []string {
	out := make([]string, len(all))
	for i, g := range all {
		out[i] = g.Name
	}
	return out
}
