package installers

import (
	"encoding/json"
	"errors"
	"log/slog"

	"github.com/offpeak/offpeak/installer"
	"github.com/offpeak/offpeak/internal/paths"
)

func gptConfig() any { return nil }

func newGPT(raw json.RawMessage, layout paths.Layout, log *slog.Logger) (installer.Backend, func(), error) {
	return nil, func() {}, errors.New("gpt backend not built yet")
}
