package policyload

import (
	"time"

	"github.com/offpeak/offpeak/scheduler/policy"
)

// DefaultTOML is the built-in policy: it applies when no policy file exists
// and is the base layer every file merges onto. It is valid TOML so
// `offpeak policy show` can print it and operators can copy it.
const DefaultTOML = `# offpeak built-in default policy
strategy = "window"

[node]
group = "default"

[[window]]
name = "nightly"
start = "0 2 * * *"
duration = "3h"
timezone = "UTC"
cutoff = "30m"

[lock]
plugin = "file"
slots = 1
timeout = "30s"

[[detect]]
kind = "file"
path = "/run/reboot-required"

[[detect]]
kind = "file"
path = "/run/reboot-needed"

[installer]
backend = "none"

[reboot]
method = "logind"
warn = "0s"
message = "offpeak: rebooting to apply a staged update"
max_inhibit_wait = "10m"

[agent]
interval = "5m"
jitter = "30s"

[post_boot]
grace = "1m"

[budget]
max_reboots = 2
period = "24h"
`

// Defaults for keys of list entries, which the base layer cannot carry.
const (
	defaultCheckTimeout  = 30 * time.Second
	defaultDetectTimeout = 30 * time.Second
	defaultNeededExit    = 1
	defaultCheckInterval = 10 * time.Second
	defaultNotifyTimeout = 10 * time.Second
)

// applyDefaults fills keys of list entries that a policy left out. Top-level
// defaults come from DefaultTOML, the base layer, so an explicit "0s" in a
// file stays zero.
func applyDefaults(p *policy.Policy) {
	for i := range p.Health {
		h := &p.Health[i]
		if h.Phase == "" {
			h.Phase = policy.PhasePreReboot
		}
		if h.Timeout == 0 {
			h.Timeout = policy.Duration(defaultCheckTimeout)
		}
		if h.Interval == 0 {
			h.Interval = policy.Duration(defaultCheckInterval)
		}
		if h.OnError == "" {
			h.OnError = policy.OnErrorFail
		}
	}
	for i := range p.Detect {
		d := &p.Detect[i]
		if d.Kind == policy.DetectCommand && d.NeededExit == 0 {
			d.NeededExit = defaultNeededExit
		}
		if d.Timeout == 0 {
			d.Timeout = policy.Duration(defaultDetectTimeout)
		}
	}
	if p.Notify.Timeout == 0 {
		p.Notify.Timeout = policy.Duration(defaultNotifyTimeout)
	}
}
