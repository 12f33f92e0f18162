// Package installer holds the update backends that stage an OS update without
// rebooting, report whether one is staged, and after the reboot mark the new
// slot good or roll back.
package installer

import (
	"context"
	"errors"
	"fmt"

	"github.com/offpeak/offpeak/internal/registry"
	"github.com/offpeak/offpeak/plugins"
)

// ErrNotSupported is returned by a backend for an operation it cannot do
// (the sentinel backend cannot stage or mark good).
var ErrNotSupported = errors.New("not supported by this backend")

// ErrUnknown means the backend could not tell whether an update is staged;
// callers treat it as "do not reboot".
var ErrUnknown = errors.New("staged state unknown")

// ErrNoRollbackTarget: Rollback refused because the slot it would make
// boot next is not both verified and marked good (or the backend cannot
// tell). Every backend that rolls back follows one rule: a slot whose
// bytes changed is unbootable until the new bytes verified, and rollback
// goes only to a slot that verified and booted good.
var ErrNoRollbackTarget = errors.New("no slot to roll back to")

// Status is what a backend knows about the booted and the staged system.
type Status struct {
	Backend       string `json:"backend"`
	BootedVersion string `json:"booted_version,omitempty"`
	Staged        bool   `json:"staged"`
	StagedVersion string `json:"staged_version,omitempty"`
	// Detail is a human-readable note ("USR-B priority 2 tries 1").
	Detail string `json:"detail,omitempty"`
}

// Backend is one way of installing updates. The scheduler declares its own
// narrower interface; this one is what every backend implements.
type Backend interface {
	Name() string
	// Status reports whether an update is staged. An error wrapping
	// ErrUnknown means "cannot tell".
	Status(ctx context.Context) (Status, error)
	// Stage installs an update into the passive slot without rebooting.
	Stage(ctx context.Context) error
	// MarkGood records that the booted slot works (after post-boot checks).
	MarkGood(ctx context.Context) error
	// Rollback makes the previous slot the one to boot next, or refuses
	// with ErrNoRollbackTarget when that slot is not verified and good.
	Rollback(ctx context.Context) error
}

// NoConfig is the settings schema of backends that take none.
type NoConfig struct{}

// SecretKeys: nothing to hide.
func (NoConfig) SecretKeys() []string { return nil }

// NewModule registers a backend whose settings are a C: build gets them
// decoded from [installer.config], unknown keys refused with an error that
// names the table and the backend.
func NewModule[C any](name string, build func(ctx context.Context, env registry.Env, c *C) (Backend, func(), error)) registry.Module[Backend] {
	return registry.Module[Backend]{Name: name, Config: func() any { return new(C) },
		New: func(ctx context.Context, env registry.Env) (Backend, func(), error) {
			c := new(C)
			if err := plugins.DecodeConfig(env.Config, c); err != nil {
				return nil, nil, fmt.Errorf("[installer.config] for %s: %w", name, err)
			}
			return build(ctx, env, c)
		}}
}

// None is the "none" backend: no installer, so nothing to build.
func None() registry.Module[Backend] {
	return registry.Module[Backend]{Name: "none", Config: func() any { return &NoConfig{} },
		New: func(context.Context, registry.Env) (Backend, func(), error) { return nil, nil, nil }}
}
