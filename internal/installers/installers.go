// Package installers builds the installer backend a policy names.
package installers

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"

	"github.com/godbus/dbus/v5"

	"github.com/offpeak/offpeak/installer"
	"github.com/offpeak/offpeak/installer/ostree"
	"github.com/offpeak/offpeak/installer/sentinel"
	"github.com/offpeak/offpeak/installer/updateengine"
	"github.com/offpeak/offpeak/internal/paths"
	"github.com/offpeak/offpeak/plugins"
)

// UpdateEngineConfig is [installer.config] for backend "update-engine".
type UpdateEngineConfig struct {
	// MarkGoodCommand replaces flatcar-setgoodroot.
	MarkGoodCommand []string `json:"mark_good_command"`
	// NoMarkGood leaves marking the boot good to update_engine itself.
	NoMarkGood bool `json:"no_mark_good"`
	// RollbackCommand makes the previous partition boot next.
	RollbackCommand []string `json:"rollback_command"`
}

// SecretKeys: the commands are argv lists; credentials inside them are
// hidden where recognisable (URLs, --key=value).
func (UpdateEngineConfig) SecretKeys() []string { return nil }

// NoConfig is the config of backends without settings.
type NoConfig struct{}

// SecretKeys: nothing to hide.
func (NoConfig) SecretKeys() []string { return nil }

// Config returns a pointer to the zero config of a backend, for policy
// validation, or nil for an unknown backend.
func Config(backend string) any {
	switch backend {
	case "sentinel":
		return &sentinel.Config{}
	case "update-engine":
		return &UpdateEngineConfig{}
	case "rpm-ostree", "bootc", "none":
		return &NoConfig{}
	case "gpt":
		return gptConfig()
	}
	return nil
}

// New builds the backend; nil for "none". The returned func releases what it
// opened (a D-Bus connection).
func New(ctx context.Context, backend string, config map[string]any, layout paths.Layout, log *slog.Logger) (installer.Backend, func(), error) {
	noop := func() {}
	raw, err := json.Marshal(config)
	if err != nil {
		return nil, noop, err
	}
	decode := func(v any) error {
		if err := plugins.DecodeConfig(raw, v); err != nil {
			return fmt.Errorf("[installer.config] for %s: %w", backend, err)
		}
		return nil
	}
	switch backend {
	case "", "none":
		return nil, noop, nil
	case "sentinel":
		var c sentinel.Config
		if err := decode(&c); err != nil {
			return nil, noop, err
		}
		return &sentinel.Backend{Paths: c.Paths, Join: layout.Join}, noop, nil
	case "rpm-ostree":
		return &ostree.RPMOSTree{}, noop, nil
	case "bootc":
		return &ostree.Bootc{}, noop, nil
	case "update-engine":
		var c UpdateEngineConfig
		if err := decode(&c); err != nil {
			return nil, noop, err
		}
		conn, err := dbus.ConnectSystemBus()
		if err != nil {
			return nil, noop, fmt.Errorf("update-engine: system bus: %w", err)
		}
		return &updateengine.Backend{Client: updateengine.NewClient(conn), Root: layout.Root, Log: log,
			MarkGoodCommand: c.MarkGoodCommand, NoMarkGood: c.NoMarkGood, RollbackCommand: c.RollbackCommand}, func() { conn.Close() }, nil
	case "gpt":
		return newGPT(raw, layout, log)
	}
	return nil, noop, fmt.Errorf("unknown installer backend %q", backend)
}
