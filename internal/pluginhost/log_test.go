package pluginhost

import (
	"log/slog"
	"testing"

	"github.com/hashicorp/go-hclog"
)

func TestHCLogBridge(t *testing.T) {
	const binary = "/usr/lib/offpeak/plugins/offpeak-plugin-x"
	for _, tc := range []struct {
		name      string
		logger    func(b *hclogBridge) hclog.Logger
		level     hclog.Level
		args      []any
		wantLevel slog.Level
		wantAttrs map[string]string
	}{
		{"go-plugin info is demoted", func(b *hclogBridge) hclog.Logger { return b }, hclog.Info,
			[]any{"plugin", binary, "id", "12"}, slog.LevelDebug, map[string]string{"path": binary, "id": "12", "plugin": "x"}},
		{"go-plugin error is a warning", func(b *hclogBridge) hclog.Logger { return b.Named("stdio") }, hclog.Error,
			nil, slog.LevelWarn, map[string]string{"plugin": "x"}},
		{"plugin line keeps its level", func(b *hclogBridge) hclog.Logger { return b.Named("offpeak-plugin-x") }, hclog.Error,
			[]any{"timestamp", "2026-03-01T02:00:00.000000Z", "k", "v"}, slog.LevelError, map[string]string{"k": "v", "plugin": "x"}},
		{"plugin trace", func(b *hclogBridge) hclog.Logger { return b.Named("offpeak-plugin-x").With("a", 1) }, hclog.Trace,
			nil, slog.LevelDebug - 4, map[string]string{"a": "1", "plugin": "x"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rh := &recordHandler{ch: make(chan slog.Record, 1)}
			b := newHCLogBridge(slog.New(rh).With("plugin", "x"), binary)
			tc.logger(b).Log(tc.level, "msg", tc.args...)
			r := <-rh.ch
			if r.Level != tc.wantLevel {
				t.Errorf("level %s, want %s", r.Level, tc.wantLevel)
			}
			got := map[string]string{}
			r.Attrs(func(a slog.Attr) bool { got[a.Key] = a.Value.String(); return true })
			if len(got) != len(tc.wantAttrs) {
				t.Errorf("attrs %v, want %v", got, tc.wantAttrs)
			}
			for k, v := range tc.wantAttrs {
				if got[k] != v {
					t.Errorf("attr %s = %q, want %q (all: %v)", k, got[k], v, got)
				}
			}
		})
	}
}
