package policyload

import (
	"maps"
	"slices"

	"github.com/offpeak/offpeak/internal/redact"
	"github.com/offpeak/offpeak/internal/registry"
	"github.com/offpeak/offpeak/scheduler/policy"
)

// Redacted returns a copy of p fit to print (`policy show`): the values of
// the keys each plugin's schema declares secret (secretKeys, by kind and
// plugin name), of keys named like secrets, the webhook's headers, and the
// credentials redact.String finds in every other setting are replaced by
// redact.Mask. p is not changed.
func Redacted(p *policy.Policy, secretKeys func(kind registry.Kind, name string) []string) *policy.Policy {
	if secretKeys == nil {
		secretKeys = func(registry.Kind, string) []string { return nil }
	}
	out := *p
	out.Node.ID, out.Node.Hostname = redact.String(p.Node.ID), redact.String(p.Node.Hostname)
	out.Lock.Config = redact.Config(p.Lock.Config, secretKeys(registry.KindLocker, p.Lock.Plugin))
	out.Health = slices.Clone(p.Health)
	for i, h := range out.Health {
		out.Health[i].Config = redact.Config(h.Config, secretKeys(registry.KindCheck, h.Plugin))
	}
	out.Detect = slices.Clone(p.Detect)
	for i, d := range out.Detect {
		out.Detect[i].Path = redact.String(d.Path)
		out.Detect[i].Argv = redact.Value(d.Argv, false).([]string)
	}
	out.Installer.Config = redact.Config(p.Installer.Config, secretKeys(registry.KindInstaller, p.Installer.Backend))
	out.Reboot.Message = redact.String(p.Reboot.Message)
	out.Notify.Webhook = redact.String(p.Notify.Webhook)
	out.Notify.CAFile = redact.String(p.Notify.CAFile)
	if p.Notify.Headers != nil {
		out.Notify.Headers = maps.Clone(p.Notify.Headers)
		for k := range out.Notify.Headers {
			out.Notify.Headers[k] = redact.Mask
		}
	}
	out.Windows = slices.Clone(p.Windows)
	out.Blackouts = slices.Clone(p.Blackouts)
	for i, b := range out.Blackouts {
		out.Blackouts[i].Reason = redact.String(b.Reason)
	}
	return &out
}
