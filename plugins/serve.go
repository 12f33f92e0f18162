package plugins

import (
	"errors"
	"io"
	"log/slog"
	"os"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
)

// ServeOpts describes what a plugin binary serves. Set Locker, HealthCheck
// or both.
type ServeOpts struct {
	// Name is the plugin's name as the policy refers to it (the binary is
	// installed as offpeak-plugin-<Name>).
	Name string
	// Version is free text shown by `offpeak plugins list`.
	Version     string
	Locker      Locker
	HealthCheck HealthCheck
}

// Serve runs the plugin until the host closes it. Call it from main after
// building the implementations; nothing may be written to stdout before it,
// because stdout carries the handshake. Run by hand (not by offpeak), the
// binary prints a notice and exits with status 1.
func Serve(opts ServeOpts) error {
	set, err := servePluginSet(opts)
	if err != nil {
		return err
	}
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig:  Handshake,
		VersionedPlugins: map[int]plugin.PluginSet{ProtocolVersion: set},
		GRPCServer:       plugin.DefaultGRPCServer,
		// go-plugin's own messages, in the JSON form the host parses.
		Logger: hclog.New(&hclog.LoggerOptions{
			Name:       opts.Name,
			Output:     os.Stderr,
			Level:      hclog.Info,
			JSONFormat: true,
		}),
	})
	return nil
}

func servePluginSet(opts ServeOpts) (plugin.PluginSet, error) {
	if opts.Name == "" {
		return nil, errors.New("plugins.Serve: Name is empty")
	}
	if opts.Locker == nil && opts.HealthCheck == nil {
		return nil, errors.New("plugins.Serve: neither Locker nor HealthCheck is set")
	}
	info := Info{Name: opts.Name, Version: opts.Version, ProtocolVersion: ProtocolVersion}
	set := plugin.PluginSet{}
	if opts.Locker != nil {
		info.Kinds = append(info.Kinds, KindLocker)
		set[string(KindLocker)] = &lockerPlugin{impl: opts.Locker}
	}
	if opts.HealthCheck != nil {
		info.Kinds = append(info.Kinds, KindCheck)
		set[string(KindCheck)] = &checkPlugin{impl: opts.HealthCheck}
	}
	set[kindInfo] = &infoPlugin{info: info}
	return set, nil
}

// hclogTime is the timestamp layout the host's log parser accepts.
const hclogTime = "2006-01-02T15:04:05.000000Z07:00"

// NewLogger returns a logger for plugin code that writes one JSON object per
// line in the form offpeak's host understands, so each line reaches the
// host's log at its own level, tagged with the plugin's name. Pass os.Stderr
// (before calling Serve).
func NewLogger(w io.Writer, level slog.Leveler) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) > 0 {
				return a
			}
			switch a.Key {
			case slog.TimeKey:
				return slog.String("@timestamp", a.Value.Time().Format(hclogTime))
			case slog.LevelKey:
				lv, _ := a.Value.Any().(slog.Level)
				return slog.String("@level", levelName(lv))
			case slog.MessageKey:
				return slog.String("@message", a.Value.String())
			}
			return a
		},
	}))
}

func levelName(l slog.Level) string {
	switch {
	case l < slog.LevelDebug:
		return "trace"
	case l < slog.LevelInfo:
		return "debug"
	case l < slog.LevelWarn:
		return "info"
	case l < slog.LevelError:
		return "warn"
	default:
		return "error"
	}
}
