// Package registry is how a built-in locker, health check or installer
// backend describes itself: its name, the schema of its settings and how to
// build it. Each one exports a Module next to its code; internal/builtin
// lists them, and that list is the only place a new built-in is named.
//
// Nothing here registers itself: a Set is a plain value built from a list,
// so every caller (and every test) gets its own.
package registry

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
)

// Kind is what a built-in is; it is also the policy's word for it in
// errors and in `policy show`.
type Kind string

const (
	KindLocker    Kind = "locker"
	KindCheck     Kind = "check"
	KindInstaller Kind = "installer"
)

// Env is what a constructor may use.
type Env struct {
	// Log receives the built-in's log lines; never nil when built by Set.New.
	Log *slog.Logger
	// Root is offpeak's --root ("" for the real system).
	Root string
	// Join places an absolute system path below Root; never nil when built
	// by Set.New.
	Join func(string) string
	// Config holds the built-in's settings as JSON. Installer backends get
	// [installer.config] here; lockers and checks are configured through
	// the plugin protocol instead (Configure, CheckRequest.Config) and get
	// nil.
	Config json.RawMessage
}

// Module is one built-in of kind T (plugins.Locker, plugins.HealthCheck,
// installer.Backend).
type Module[T any] struct {
	// Name is what the policy calls it ([lock] plugin, [[health]] plugin,
	// [installer] backend).
	Name string
	// Config returns a pointer to a new zero settings struct. Its json tags
	// are the keys `policy validate` accepts (with their types); the keys its
	// SecretKeys method lists are the ones `policy show` redacts.
	Config func() any
	// New builds an instance. The cleanup it returns, when not nil, releases
	// what New opened (a bus connection); it runs when the instance is
	// dropped.
	New func(ctx context.Context, env Env) (T, func(), error)
}

// Logged adapts a constructor that needs nothing but a logger (the lockers
// and checks) to Module.New.
func Logged[T any](f func(*slog.Logger) T) func(context.Context, Env) (T, func(), error) {
	return func(_ context.Context, env Env) (T, func(), error) { return f(env.Log), nil, nil }
}

// Set is the built-ins of one kind, in the order they were listed.
type Set[T any] struct {
	mods []Module[T]
}

// NewSet returns the set of mods. A name listed twice keeps its first
// module (a test of the list refuses duplicates).
func NewSet[T any](mods ...Module[T]) Set[T] {
	var s Set[T]
	for _, m := range mods {
		if _, dup := s.Lookup(m.Name); !dup {
			s.mods = append(s.mods, m)
		}
	}
	return s
}

// Lookup returns the module called name.
func (s Set[T]) Lookup(name string) (Module[T], bool) {
	for _, m := range s.mods {
		if m.Name == name {
			return m, true
		}
	}
	return Module[T]{}, false
}

// Names lists the modules in the order they were listed.
func (s Set[T]) Names() []string {
	out := make([]string, len(s.mods))
	for i, m := range s.mods {
		out[i] = m.Name
	}
	return out
}

// Sorted lists the names in lexical order.
func (s Set[T]) Sorted() []string {
	out := s.Names()
	slices.Sort(out)
	return out
}

// Schema returns a new zero settings struct of the module called name, or
// nil when there is none (not a built-in: its settings pass unchecked).
func (s Set[T]) Schema(name string) any {
	if m, ok := s.Lookup(name); ok && m.Config != nil {
		return m.Config()
	}
	return nil
}

// New builds the module called name; ok is false when there is none.
// Missing Log and Join in env are filled in (discard, identity), and the
// cleanup returned is never nil.
func (s Set[T]) New(ctx context.Context, name string, env Env) (v T, cleanup func(), ok bool, err error) {
	m, found := s.Lookup(name)
	if !found {
		return v, func() {}, false, nil
	}
	if env.Log == nil {
		env.Log = slog.New(slog.DiscardHandler)
	}
	if env.Join == nil {
		env.Join = func(p string) string { return p }
	}
	v, cleanup, err = m.New(ctx, env)
	if cleanup == nil {
		cleanup = func() {}
	}
	return v, cleanup, true, err
}
