package pluginhost

import (
	"context"
	"slices"

	"github.com/offpeak/offpeak/plugins"
)

// PluginInfo describes one plugin for `offpeak plugins list`.
type PluginInfo struct {
	Name    string         `json:"name"`
	Kinds   []plugins.Kind `json:"kinds"`
	Builtin bool           `json:"builtin"`
	Path    string         `json:"path"`
	SHA256  string         `json:"sha256,omitempty"`
	Pinned  bool           `json:"pinned"`
	// Version and ProtocolVersion are the plugin's own answer.
	Version         string `json:"version,omitempty"`
	ProtocolVersion int    `json:"protocol_version,omitempty"`
	// Answered: the plugin started, completed the handshake and described
	// itself.
	Answered bool   `json:"answered"`
	Error    string `json:"error,omitempty"`
	// ShadowedBy is set for an installed binary that is not used because a
	// built-in or a binary in a later dir has the same name.
	ShadowedBy string `json:"shadowed_by,omitempty"`
	// Refused: the binary was not run because someone other than root
	// could change it or a directory above it; Error says which and how.
	Refused bool `json:"refused,omitempty"`
}

// List starts every built-in and installed plugin in turn, asks it to
// describe itself and stops it. Built-ins come first, then installed
// plugins, each sorted by name.
func (m *Manager) List(ctx context.Context) ([]PluginInfo, error) {
	var out []PluginInfo
	exeSum := ""
	if m.opts.Exe != "" {
		exeSum, _ = fileSHA256(m.opts.Exe)
	}
	builtinKinds := map[string][]plugins.Kind{}
	for _, k := range []plugins.Kind{plugins.KindLocker, plugins.KindCheck} {
		for _, n := range m.opts.Builtins[k] {
			builtinKinds[n] = append(builtinKinds[n], k)
		}
	}
	for _, name := range sortedNames(builtinKinds) {
		pi := PluginInfo{Name: name, Kinds: builtinKinds[name], Builtin: true, Path: m.opts.Exe, SHA256: exeSum, Answered: true}
		_, pi.Pinned = m.opts.Pins[name]
		for _, k := range pi.Kinds {
			tgt, err := m.resolve(k, name)
			if err == nil {
				var info plugins.Info
				info, err = m.probe(ctx, tgt)
				pi.Version, pi.ProtocolVersion = info.Version, info.ProtocolVersion
			}
			if err != nil {
				pi.Answered, pi.Error = false, err.Error()
				break
			}
		}
		out = append(out, pi)
	}
	d := discover(m.opts.Dirs)
	for _, name := range sortedNames(d.found) {
		in := d.found[name]
		for _, path := range in.shadowed {
			sum, _ := fileSHA256(path)
			out = append(out, PluginInfo{Name: name, Kinds: []plugins.Kind{}, Path: path, SHA256: sum, ShadowedBy: in.path})
		}
		pi := PluginInfo{Name: name, Path: in.path, Kinds: []plugins.Kind{}}
		pi.SHA256, _ = fileSHA256(in.path)
		_, pi.Pinned = m.opts.Pins[name]
		info, err := func() (plugins.Info, error) {
			pin, err := m.pin(name)
			if err != nil {
				return plugins.Info{}, err
			}
			return m.probe(ctx, target{name: name, path: in.path, pin: pin})
		}()
		if err != nil {
			pi.Error = err.Error()
		} else {
			pi.Answered = true
			pi.Kinds = slices.Clone(info.Kinds)
			pi.Version, pi.ProtocolVersion = info.Version, info.ProtocolVersion
			// Built-ins win per kind: the binary is unused when every kind
			// it serves has a built-in of the same name.
			if len(info.Kinds) > 0 && !slices.ContainsFunc(info.Kinds, func(k plugins.Kind) bool { return !m.isBuiltin(k, name) }) {
				pi.ShadowedBy = "built-in"
			}
		}
		out = append(out, pi)
	}
	for _, name := range sortedNames(d.refused) {
		r := d.refused[name]
		out = append(out, PluginInfo{Name: name, Path: r.path, Kinds: []plugins.Kind{}, Refused: true, Error: r.err.Error()})
	}
	for _, p := range d.problems {
		out = append(out, PluginInfo{Kinds: []plugins.Kind{}, Error: p.Error()})
	}
	return out, ctx.Err()
}

// probe starts tgt, asks Info and stops it.
func (m *Manager) probe(ctx context.Context, tgt target) (plugins.Info, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, m.opts.CallTimeout)
		defer cancel()
	}
	p, err := m.startProc(ctx, tgt, "")
	if err != nil {
		return plugins.Info{}, err
	}
	m.untrack(p)
	p.stop(false)
	return p.info, nil
}
