package updateengine

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/godbus/dbus/v5"

	"github.com/offpeak/offpeak/installer"
	"github.com/offpeak/offpeak/internal/paths"
	"github.com/offpeak/offpeak/internal/registry"
)

// Name is the backend's name in policies and status.
const Name = "update-engine"

// DefaultMarkGoodCommand is what update_engine itself runs about 45 seconds
// after it starts to mark the booted USR partition successful (GPT
// attributes successful=1, tries=0). Running it is idempotent.
const DefaultMarkGoodCommand = "/usr/sbin/flatcar-setgoodroot"

// Files the booted version is read from, in order, below Backend.Root.
const (
	flatcarReleaseFile = "/usr/share/flatcar/release"
	osReleaseFile      = "/etc/os-release"
	usrOSReleaseFile   = "/usr/lib/os-release"
)

// Runner runs a command (argv, no shell) and returns its stdout.
type Runner interface {
	Run(ctx context.Context, argv []string) ([]byte, error)
}

// ExecRunner runs commands with os/exec.
type ExecRunner = installer.ExecRunner

// Config is [installer.config] for backend "update-engine".
type Config struct {
	// MarkGoodCommand replaces flatcar-setgoodroot.
	MarkGoodCommand []string `json:"mark_good_command"`
	// NoMarkGood leaves marking the boot good to update_engine itself.
	NoMarkGood bool `json:"no_mark_good"`
	// RollbackCommand makes the previous partition boot next.
	RollbackCommand []string `json:"rollback_command"`
}

// SecretKeys: the commands are argv lists; credentials inside them are
// hidden where recognisable (URLs, --key=value).
func (Config) SecretKeys() []string { return nil }

// Module registers the update-engine backend with offpeak's built-ins. Its
// cleanup closes the system bus connection it opens.
func Module() registry.Module[installer.Backend] {
	return installer.NewModule(Name, func(_ context.Context, env registry.Env, c *Config) (installer.Backend, func(), error) {
		conn, err := dbus.ConnectSystemBus()
		if err != nil {
			return nil, nil, fmt.Errorf("update-engine: system bus: %w", err)
		}
		b := &Backend{Client: NewClient(conn), Root: env.Root, Log: env.Log,
			MarkGoodCommand: c.MarkGoodCommand, NoMarkGood: c.NoMarkGood, RollbackCommand: c.RollbackCommand}
		return b, func() { conn.Close() }, nil
	})
}

// Backend is the installer.Backend for Flatcar's update_engine.
//
// MarkGood runs flatcar-setgoodroot (what update_engine runs on its own
// after boot), so offpeak marks the slot as soon as its post-boot checks
// pass; contrib/update-engine.md shows how to hold update_engine back until
// then so it cannot mark a bad boot good first. update_engine has no
// rollback call; Rollback runs RollbackCommand when one is configured.
type Backend struct {
	Client *Client
	// Root is prepended to the release files (tests, --root).
	Root   string
	Runner Runner       // nil: ExecRunner
	Log    *slog.Logger // nil: discard

	// MarkGoodCommand replaces DefaultMarkGoodCommand.
	MarkGoodCommand []string
	// NoMarkGood leaves marking to update_engine (MarkGood does nothing).
	NoMarkGood bool
	// RollbackCommand makes the previous USR partition boot next, e.g. a
	// script running `cgpt prioritize` on the passive partition. Without
	// it Rollback returns installer.ErrNotSupported.
	RollbackCommand []string
}

var _ installer.Backend = (*Backend)(nil)

// Name returns "update-engine".
func (b *Backend) Name() string { return Name }

func (b *Backend) runner() Runner {
	if b.Runner != nil {
		return b.Runner
	}
	return ExecRunner{}
}

func (b *Backend) log() *slog.Logger {
	if b.Log != nil {
		return b.Log
	}
	return slog.New(slog.DiscardHandler)
}

// Status asks update_engine whether an update waits for a reboot. Any
// failure to get a clear answer wraps installer.ErrUnknown.
func (b *Backend) Status(ctx context.Context) (installer.Status, error) {
	st, err := b.Client.GetStatus(ctx)
	if err != nil {
		return installer.Status{Backend: Name}, fmt.Errorf("%w: %w", installer.ErrUnknown, err)
	}
	return convert(st, BootedVersion(b.Root))
}

// Watch returns a channel of statuses: the current one, then one per
// StatusUpdate signal, so the agent wakes when an update is staged. It is
// closed when ctx ends or the bus connection drops.
func (b *Backend) Watch(ctx context.Context) (<-chan installer.Status, error) {
	in, err := b.Client.Watch(ctx)
	if err != nil {
		return nil, err
	}
	booted := BootedVersion(b.Root)
	out := make(chan installer.Status)
	go func() {
		defer close(out)
		for st := range in {
			is, err := convert(st, booted)
			if err != nil {
				b.log().Warn("ignoring update_engine status", "err", err)
				continue
			}
			select {
			case out <- is:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

// Stage asks update_engine to check for, download and install an update
// into the passive partition. It does not wait: watch for the staged state.
func (b *Backend) Stage(ctx context.Context) error {
	if err := b.Client.AttemptUpdate(ctx); err != nil {
		return fmt.Errorf("stage: %w", err)
	}
	return nil
}

// MarkGood runs the mark-good command (flatcar-setgoodroot by default).
func (b *Backend) MarkGood(ctx context.Context) error {
	if b.NoMarkGood {
		b.log().Info("leaving mark-good to update_engine")
		return nil
	}
	argv := b.MarkGoodCommand
	if len(argv) == 0 {
		argv = []string{DefaultMarkGoodCommand}
	}
	if _, err := b.runner().Run(ctx, argv); err != nil {
		return fmt.Errorf("mark good: %w", err)
	}
	return nil
}

// Rollback runs RollbackCommand; update_engine itself offers no rollback.
//
// update_engine as Flatcar ships it writes the passive USR partition
// without first marking it unbootable, so while it downloads, verifies or
// finalizes an update, or holds one staged that never booted, the
// partition a rollback would boot holds unverified bytes. The command then
// does not run (installer.ErrNoRollbackTarget); it runs only while
// update_engine says it is idle. A status that cannot be read refuses too.
func (b *Backend) Rollback(ctx context.Context) error {
	if len(b.RollbackCommand) == 0 {
		return fmt.Errorf("%w: update_engine has no rollback call; configure a rollback command (cgpt prioritize of the passive USR partition) or use the gpt backend", installer.ErrNotSupported)
	}
	st, err := b.Client.GetStatus(ctx)
	if err != nil {
		return fmt.Errorf("%w: cannot tell whether update_engine is writing the passive partition: %w", installer.ErrNoRollbackTarget, err)
	}
	if st.CurrentOperation != OpIdle {
		return fmt.Errorf("%w: update_engine is in %s, so the passive partition may hold unverified bytes; rollback runs only while update_engine is idle",
			installer.ErrNoRollbackTarget, st.CurrentOperation)
	}
	if _, err := b.runner().Run(ctx, b.RollbackCommand); err != nil {
		return fmt.Errorf("rollback: %w", err)
	}
	return nil
}

func convert(st Status, booted string) (installer.Status, error) {
	if !knownOps[st.CurrentOperation] {
		return installer.Status{Backend: Name, BootedVersion: booted},
			fmt.Errorf("%w: %w: %q", installer.ErrUnknown, ErrUnknownOperation, st.CurrentOperation)
	}
	out := installer.Status{
		Backend:       Name,
		BootedVersion: booted,
		Staged:        st.Staged(),
		Detail:        "update_engine: " + st.CurrentOperation,
	}
	if st.CurrentOperation == OpDownloading {
		out.Detail += fmt.Sprintf(" %.0f%%", st.Progress*100)
	}
	if out.Staged && st.NewVersion != "0.0.0" {
		out.StagedVersion = st.NewVersion
	}
	return out, nil
}

// BootedVersion reads the running OS version below root:
// FLATCAR_RELEASE_VERSION from /usr/share/flatcar/release, else VERSION
// from os-release. It returns "" when none is readable.
func BootedVersion(root string) string {
	l := paths.Layout{Root: root}
	candidates := []struct{ file, key string }{
		{flatcarReleaseFile, "FLATCAR_RELEASE_VERSION"},
		{osReleaseFile, "VERSION"},
		{usrOSReleaseFile, "VERSION"},
	}
	for _, c := range candidates {
		data, err := os.ReadFile(l.Join(c.file))
		if err != nil {
			continue
		}
		if v := ParseEnvFile(data)[c.key]; v != "" {
			return v
		}
	}
	return ""
}

// ParseEnvFile parses os-release style KEY=VALUE lines. Values may be
// unquoted, 'single' or "double" quoted (with \" \\ \$ \` escapes in
// double quotes). Blank lines, comments and malformed lines are skipped.
func ParseEnvFile(data []byte) map[string]string {
	out := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		key, val, ok := strings.Cut(line, "=")
		if !ok || !validKey(key) {
			continue
		}
		v, ok := unquote(val)
		if !ok {
			continue
		}
		out[key] = v
	}
	return out
}

func validKey(k string) bool {
	if k == "" {
		return false
	}
	for i, c := range k {
		switch {
		case c == '_', c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

func unquote(v string) (string, bool) {
	if v == "" {
		return "", true
	}
	switch v[0] {
	case '\'':
		if len(v) < 2 || v[len(v)-1] != '\'' {
			return "", false
		}
		return v[1 : len(v)-1], true
	case '"':
		if len(v) < 2 || v[len(v)-1] != '"' {
			return "", false
		}
		inner := v[1 : len(v)-1]
		var b strings.Builder
		for i := 0; i < len(inner); i++ {
			c := inner[i]
			if c == '\\' && i+1 < len(inner) && strings.IndexByte("\"\\$`", inner[i+1]) >= 0 {
				i++
				c = inner[i]
			}
			b.WriteByte(c)
		}
		return b.String(), true
	default:
		return v, true
	}
}
