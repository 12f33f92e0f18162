// Package logging builds offpeak's slog logger: structured journal entries
// (OFFPEAK_PHASE=, OFFPEAK_DECISION=, …) when stderr is connected to
// journald, plain text otherwise.
package logging

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"github.com/coreos/go-systemd/v22/journal"

	"github.com/offpeak/offpeak/internal/printable"
)

// SendFunc delivers one journal entry; journal.Send has this shape.
type SendFunc func(message string, priority journal.Priority, fields map[string]string) error

// Identifier is the SYSLOG_IDENTIFIER of offpeak's entries
// (`journalctl -t offpeak`).
const Identifier = "offpeak"

// ParseLevel reads "debug", "info", "warn" or "error" (default info).
func ParseLevel(level string) slog.Level {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return slog.LevelInfo
	}
	return lv
}

// New returns a logger writing to w at level. When w is the stream systemd
// connected to the journal (JOURNAL_STREAM names its device and inode) it
// logs through the journal's native protocol instead, so each attribute
// becomes a field that `journalctl OFFPEAK_DECISION=reboot` can match.
func New(w io.Writer, level string) *slog.Logger {
	opts := &slog.HandlerOptions{Level: ParseLevel(level)}
	if IsJournalStream(w) && journal.Enabled() {
		return slog.New(NewJournalHandler(journal.Send, w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// IsJournalStream reports whether w is the file systemd connected to the
// journal for this service: $JOURNAL_STREAM is "DEV:INODE" of that stream
// and must match w's own, since a redirected stderr inherits the variable.
func IsJournalStream(w io.Writer) bool {
	env := os.Getenv("JOURNAL_STREAM")
	if env == "" {
		return false
	}
	f, ok := w.(interface{ Fd() uintptr })
	if !ok {
		return false
	}
	var dev, ino uint64
	if _, err := fmt.Sscanf(env, "%d:%d", &dev, &ino); err != nil {
		return false
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return uint64(st.Dev) == dev && uint64(st.Ino) == ino
}

// fieldNames maps the attributes offpeak's pipeline logs to the journal
// fields documented for operators.
var fieldNames = map[string]string{
	"phase":    "OFFPEAK_PHASE",
	"group":    "OFFPEAK_GROUP",
	"decision": "OFFPEAK_DECISION",
	"node":     "OFFPEAK_NODE",
}

// FieldName returns the journal field for an attribute key (groups joined
// by "."): the fixed names above, else OFFPEAK_ and the key upper-cased with
// every character outside [A-Z0-9] turned into "_".
func FieldName(key string) string {
	if f, ok := fieldNames[key]; ok {
		return f
	}
	var b strings.Builder
	b.WriteString("OFFPEAK_")
	for _, r := range strings.ToUpper(key) {
		if (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	// journald caps field names at 64 characters.
	s := b.String()
	if len(s) > 64 {
		s = s[:64]
	}
	return s
}

// Priority maps a slog level to a syslog priority.
func Priority(l slog.Level) journal.Priority {
	switch {
	case l >= slog.LevelError:
		return journal.PriErr
	case l >= slog.LevelWarn:
		return journal.PriWarning
	case l >= slog.LevelInfo:
		return journal.PriInfo
	}
	return journal.PriDebug
}

// JournalHandler is a slog.Handler sending native journal entries. MESSAGE
// carries the message and the attributes as key=value text (what
// `journalctl` shows); each attribute is also its own field.
type JournalHandler struct {
	send     SendFunc
	fallback slog.Handler // nil: none
	opts     slog.HandlerOptions
	attrs    []slog.Attr // pre-bound with WithAttrs, keys already prefixed
	prefix   string      // open groups, "a.b."
}

// NewJournalHandler returns a handler sending through send. When a send
// fails (the journal went away) the entry is written as text to fallback.
func NewJournalHandler(send SendFunc, fallback io.Writer, opts *slog.HandlerOptions) *JournalHandler {
	h := &JournalHandler{send: send}
	if opts != nil {
		h.opts = *opts
	}
	if fallback != nil {
		h.fallback = slog.NewTextHandler(fallback, &h.opts)
	}
	return h
}

func (h *JournalHandler) Enabled(_ context.Context, l slog.Level) bool {
	lowest := slog.LevelInfo
	if h.opts.Level != nil {
		lowest = h.opts.Level.Level()
	}
	return l >= lowest
}

func (h *JournalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append(c.attrs[:len(c.attrs):len(c.attrs)], prefixed(h.prefix, as)...)
	if c.fallback != nil {
		c.fallback = c.fallback.WithAttrs(as)
	}
	return &c
}

func (h *JournalHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	c := *h
	c.prefix += name + "."
	if c.fallback != nil {
		c.fallback = c.fallback.WithGroup(name)
	}
	return &c
}

func prefixed(prefix string, as []slog.Attr) []slog.Attr {
	out := make([]slog.Attr, 0, len(as))
	for _, a := range as {
		out = append(out, slog.Attr{Key: prefix + a.Key, Value: a.Value})
	}
	return out
}

func (h *JournalHandler) Handle(ctx context.Context, r slog.Record) error {
	fields := map[string]string{"SYSLOG_IDENTIFIER": Identifier}
	var text strings.Builder
	text.WriteString(r.Message)
	var add func(a slog.Attr)
	add = func(a slog.Attr) {
		a.Value = a.Value.Resolve()
		if a.Equal(slog.Attr{}) {
			return
		}
		if a.Value.Kind() == slog.KindGroup {
			for _, g := range a.Value.Group() {
				add(slog.Attr{Key: joinKey(a.Key, g.Key), Value: g.Value})
			}
			return
		}
		v := a.Value.String()
		fields[FieldName(a.Key)] = v
		text.WriteByte(' ')
		text.WriteString(a.Key)
		text.WriteByte('=')
		if strings.ContainsAny(v, " \t\n\"=") || v == "" || !printable.Is(v) {
			fmt.Fprintf(&text, "%q", v)
		} else {
			text.WriteString(v)
		}
	}
	if h.opts.AddSource && r.PC != 0 {
		f, _ := runtime.CallersFrames([]uintptr{r.PC}).Next()
		fields["CODE_FILE"], fields["CODE_LINE"], fields["CODE_FUNC"] = f.File, strconv.Itoa(f.Line), f.Function
	}
	for _, a := range h.attrs {
		add(a)
	}
	r.Attrs(func(a slog.Attr) bool {
		add(slog.Attr{Key: h.prefix + a.Key, Value: a.Value})
		return true
	})
	if err := h.send(text.String(), Priority(r.Level), fields); err != nil {
		if h.fallback != nil {
			return h.fallback.Handle(ctx, r)
		}
		return fmt.Errorf("journal: %w", err)
	}
	return nil
}

func joinKey(group, key string) string {
	if group == "" {
		return key
	}
	return group + "." + key
}
