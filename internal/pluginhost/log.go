package pluginhost

import (
	"bytes"
	"context"
	"io"
	"log"
	"log/slog"
	"path/filepath"
	"sync"

	"github.com/hashicorp/go-hclog"
)

// hclogBridge is the hclog.Logger that go-plugin logs through: its own
// messages, and the plugin's stderr lines (already parsed to level, message
// and key/values) through a child named after the binary. It forwards
// everything to slog.
type hclogBridge struct {
	log  *slog.Logger
	name string
	// stderrName is the child name go-plugin uses for the plugin's stderr.
	stderrName string
	// fromPlugin: this logger carries the plugin's own lines, at the
	// plugin's levels. go-plugin's lifecycle chatter is demoted: the
	// Manager reports what matters (crashes, failed starts) itself.
	fromPlugin bool
}

var _ hclog.Logger = (*hclogBridge)(nil)

func newHCLogBridge(l *slog.Logger, binary string) *hclogBridge {
	return &hclogBridge{log: l, stderrName: filepath.Base(binary)}
}

func (b *hclogBridge) level(l hclog.Level) slog.Level {
	if !b.fromPlugin {
		switch l {
		case hclog.Info:
			l = hclog.Debug
		case hclog.Error:
			l = hclog.Warn
		}
	}
	return slogLevel(l)
}

func slogLevel(l hclog.Level) slog.Level {
	switch l {
	case hclog.Trace:
		return slog.LevelDebug - 4
	case hclog.Debug:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	case hclog.Error:
		return slog.LevelError
	default:
		return slog.LevelInfo
	}
}

func (b *hclogBridge) Log(level hclog.Level, msg string, args ...any) {
	lv := b.level(level)
	if !b.log.Enabled(context.Background(), lv) {
		return
	}
	kept := make([]any, 0, len(args))
	for i := 0; i+1 < len(args); i += 2 {
		k, _ := args[i].(string)
		switch {
		case b.fromPlugin && k == "timestamp":
			// go-plugin appends the plugin's own time; the record has one.
			continue
		case !b.fromPlugin && k == "plugin":
			// go-plugin's "plugin" is the binary's path; plugin=<name> is
			// already on the logger.
			kept = append(kept, "path", args[i+1])
			continue
		}
		kept = append(kept, args[i], args[i+1])
	}
	if len(args)%2 == 1 {
		kept = append(kept, args[len(args)-1])
	}
	b.log.Log(context.Background(), lv, msg, kept...)
}

func (b *hclogBridge) Trace(msg string, args ...any) { b.Log(hclog.Trace, msg, args...) }
func (b *hclogBridge) Debug(msg string, args ...any) { b.Log(hclog.Debug, msg, args...) }
func (b *hclogBridge) Info(msg string, args ...any)  { b.Log(hclog.Info, msg, args...) }
func (b *hclogBridge) Warn(msg string, args ...any)  { b.Log(hclog.Warn, msg, args...) }
func (b *hclogBridge) Error(msg string, args ...any) { b.Log(hclog.Error, msg, args...) }

func (b *hclogBridge) enabled(l hclog.Level) bool {
	return b.log.Enabled(context.Background(), b.level(l))
}

func (b *hclogBridge) IsTrace() bool { return b.enabled(hclog.Trace) }
func (b *hclogBridge) IsDebug() bool { return b.enabled(hclog.Debug) }
func (b *hclogBridge) IsInfo() bool  { return b.enabled(hclog.Info) }
func (b *hclogBridge) IsWarn() bool  { return b.enabled(hclog.Warn) }
func (b *hclogBridge) IsError() bool { return b.enabled(hclog.Error) }

func (b *hclogBridge) ImpliedArgs() []any { return nil }

func (b *hclogBridge) With(args ...any) hclog.Logger {
	c := *b
	c.log = b.log.With(args...)
	return &c
}

func (b *hclogBridge) Name() string { return b.name }

// Named and ResetNamed keep the slog logger: its plugin=<name> attribute
// already says where a line comes from.
func (b *hclogBridge) Named(name string) hclog.Logger {
	c := *b
	c.name = name
	if b.name != "" {
		c.name = b.name + "." + name
	}
	c.fromPlugin = b.fromPlugin || name == b.stderrName
	return &c
}

func (b *hclogBridge) ResetNamed(name string) hclog.Logger {
	c := *b
	c.name = name
	c.fromPlugin = name == b.stderrName
	return &c
}

// SetLevel is a no-op: the slog handler decides what is shown.
func (b *hclogBridge) SetLevel(hclog.Level) {}

// GetLevel reports the lowest level the slog handler lets through, so that
// go-plugin skips parsing lines nobody will see.
func (b *hclogBridge) GetLevel() hclog.Level {
	for _, l := range []hclog.Level{hclog.Trace, hclog.Debug, hclog.Info, hclog.Warn, hclog.Error} {
		if b.enabled(l) {
			return l
		}
	}
	return hclog.Off
}

func (b *hclogBridge) StandardLogger(*hclog.StandardLoggerOptions) *log.Logger {
	return slog.NewLogLogger(b.log.Handler(), slog.LevelInfo)
}

func (b *hclogBridge) StandardWriter(opts *hclog.StandardLoggerOptions) io.Writer {
	return b.StandardLogger(opts).Writer()
}

// lineLogger turns a byte stream (the plugin's stdout or stderr after the
// handshake, relayed by go-plugin) into one log record per line.
type lineLogger struct {
	log    *slog.Logger
	stream string
	mu     sync.Mutex
	buf    []byte
}

func (w *lineLogger) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.emit(w.buf[:i])
		w.buf = w.buf[i+1:]
	}
	// Bound memory if a plugin writes without newlines.
	if len(w.buf) > 64<<10 {
		w.emit(w.buf)
		w.buf = nil
	}
	return len(p), nil
}

func (w *lineLogger) emit(line []byte) {
	line = bytes.TrimRight(line, "\r")
	if len(line) == 0 {
		return
	}
	w.log.Info(string(line), "stream", w.stream)
}
