package pluginhost

import (
	"errors"

	"github.com/offpeak/offpeak/internal/safepath"
	"github.com/offpeak/offpeak/plugins"
)

// Errors callers branch on. Every error from a plugin handle that is not the
// plugin's own answer wraps one of these; all of them mean "no".
var (
	// ErrPluginDown: the plugin process could not be started, died, or is
	// waiting out its restart backoff.
	ErrPluginDown = errors.New("plugin down")
	// ErrBadAnswer: the plugin answered something the protocol forbids.
	// It is the same value as plugins.ErrBadAnswer.
	ErrBadAnswer = plugins.ErrBadAnswer
	// ErrTimeout: the plugin did not answer before the call's deadline.
	ErrTimeout = errors.New("plugin did not answer in time")
	// ErrChecksumMismatch: the binary's SHA-256 differs from its pin.
	ErrChecksumMismatch = errors.New("plugin checksum mismatch")
	// ErrHandshake: the binary did not complete the plugin handshake (wrong
	// protocol version, output on stdout, not an offpeak plugin).
	ErrHandshake = errors.New("plugin handshake failed")
	// ErrWrongKind: the plugin does not serve the kind asked for.
	ErrWrongKind = errors.New("plugin does not serve this kind")
	// ErrNotFound: no built-in or installed plugin has the name.
	ErrNotFound = errors.New("no such plugin")
	// ErrClosed: the Manager was closed.
	ErrClosed = errors.New("plugin manager closed")
	// ErrUnsafe: the plugin file, its directory or a directory above could
	// be changed by someone other than root (or the user running offpeak),
	// so it is not run. It is safepath.ErrUnsafe.
	ErrUnsafe = safepath.ErrUnsafe
)
