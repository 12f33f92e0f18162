package installers

import (
	"encoding/json"
	"fmt"
	"log/slog"

	"github.com/offpeak/offpeak/installer"
	"github.com/offpeak/offpeak/installer/gpt"
	"github.com/offpeak/offpeak/internal/paths"
	"github.com/offpeak/offpeak/plugins"
)

func gptConfig() any { return &gpt.Config{} }

func newGPT(raw json.RawMessage, layout paths.Layout, log *slog.Logger) (installer.Backend, func(), error) {
	var c gpt.Config
	if err := plugins.DecodeConfig(raw, &c); err != nil {
		return nil, func() {}, fmt.Errorf("[installer.config] for gpt: %w", err)
	}
	b, err := gpt.NewBackend(c, layout, log)
	if err != nil {
		return nil, func() {}, err
	}
	return b, func() {}, nil
}
