package redact

import (
	"sort"

	"github.com/offpeak/offpeak/plugins"
)

// Holder returns h fit to publish (a FleetLock answer, `locks status`,
// `status`) and the names of the fields that held a secret. A holder
// record is public: every client of the group's semaphore reads it. A
// secret in it is a metadata value under a key named like a secret
// (SecretName), or anything String hides in any field: URL user info and
// query values, a secret KEY=VALUE, a credential-shaped value. Such a
// field is shown with the secret replaced by Mask.
func Holder(h plugins.Holder) (plugins.Holder, []string) {
	var fields []string
	clean := func(name, v string) string {
		if r := String(v); r != v {
			fields = append(fields, name)
			return r
		}
		return v
	}
	out := h
	out.ID = clean("id", h.ID)
	out.Hostname = clean("hostname", h.Hostname)
	out.BootID = clean("boot_id", h.BootID)
	out.Version = clean("version", h.Version)
	if h.Meta != nil {
		out.Meta = make(map[string]string, len(h.Meta))
		for k, v := range h.Meta {
			if SecretName(k) && v != "" {
				out.Meta[k] = Mask
				fields = append(fields, "meta."+k)
				continue
			}
			out.Meta[k] = clean("meta."+k, v)
		}
	}
	sort.Strings(fields)
	return out, fields
}

// LockState returns st with every holder passed through Holder and the
// freeze reason and author through String, and the names of the fields
// that held a secret ("holders[node-a].meta.password", "frozen_reason").
func LockState(st plugins.LockState) (plugins.LockState, []string) {
	out := st
	var fields []string
	if st.Holders != nil {
		out.Holders = make([]plugins.Holder, len(st.Holders))
		for i, h := range st.Holders {
			var hf []string
			out.Holders[i], hf = Holder(h)
			for _, f := range hf {
				fields = append(fields, "holders["+out.Holders[i].ID+"]."+f)
			}
		}
	}
	if r := String(st.FrozenReason); r != st.FrozenReason {
		out.FrozenReason = r
		fields = append(fields, "frozen_reason")
	}
	if r := String(st.FrozenBy); r != st.FrozenBy {
		out.FrozenBy = r
		fields = append(fields, "frozen_by")
	}
	return out, fields
}

// Holders is Holder over a list, for callers that only show them.
func Holders(hs []plugins.Holder) []plugins.Holder {
	if hs == nil {
		return nil
	}
	out := make([]plugins.Holder, len(hs))
	for i, h := range hs {
		out[i], _ = Holder(h)
	}
	return out
}
