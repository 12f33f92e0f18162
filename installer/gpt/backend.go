package gpt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/offpeak/offpeak/installer"
	"github.com/offpeak/offpeak/internal/registry"
)

// Config configures the gpt backend (the policy's installer settings).
type Config struct {
	// Disk is the block device (or image file) holding USR-A and USR-B.
	Disk string `json:"disk"`
	// Booted is the booted slot's label or PARTUUID; empty reads
	// /proc/cmdline below the root.
	Booted string `json:"booted,omitempty"`
	// Image is the file Stage installs.
	Image string `json:"image,omitempty"`
	// SHA256 is the image's expected hex checksum.
	SHA256 string `json:"sha256,omitempty"`
	// Sig and PubKey are files: an ed25519 signature over the image's hex
	// SHA-256 and the key to check it with (see ParsePublicKey).
	Sig    string `json:"sig,omitempty"`
	PubKey string `json:"pubkey,omitempty"`
}

// SecretKeys: the gpt backend has no secret settings (sig and pubkey are
// paths to public material).
func (Config) SecretKeys() []string { return nil }

// ErrNoImage: Stage was called but no image is configured.
var ErrNoImage = errors.New("no image configured")

// Backend is the native GPT A/B installer.
type Backend struct {
	cfg  Config
	join func(string) string
	log  *slog.Logger
}

var _ installer.Backend = (*Backend)(nil)

// NewBackend checks cfg and returns the backend. join places the system
// paths it reads and writes (DefaultCmdline, DefaultRecordDir) below a root,
// as offpeak's --root does; nil uses them as they are.
func NewBackend(cfg Config, join func(string) string, log *slog.Logger) (*Backend, error) {
	if cfg.Disk == "" {
		return nil, fmt.Errorf("%w: gpt installer needs a disk", ErrInvalidArgument)
	}
	if cfg.SHA256 != "" {
		if _, err := ParseSHA256(cfg.SHA256); err != nil {
			return nil, err
		}
	}
	if (cfg.Sig == "") != (cfg.PubKey == "") {
		return nil, fmt.Errorf("%w: sig and pubkey go together", ErrInvalidArgument)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if join == nil {
		join = func(p string) string { return p }
	}
	return &Backend{cfg: cfg, join: join, log: log}, nil
}

// Module registers the gpt backend with offpeak's built-ins.
func Module() registry.Module[installer.Backend] {
	return installer.NewModule("gpt", func(_ context.Context, env registry.Env, c *Config) (installer.Backend, func(), error) {
		b, err := NewBackend(*c, env.Join, env.Log)
		if err != nil {
			return nil, nil, err
		}
		return b, nil, nil
	})
}

// Name is "gpt".
func (b *Backend) Name() string { return "gpt" }

func (b *Backend) target() Target {
	return Target{Disk: b.cfg.Disk, Booted: b.cfg.Booted, CmdlinePath: b.join(DefaultCmdline), RecordDir: b.join(DefaultRecordDir)}
}

// Status reports the staged update. The slots carry no version, so the
// versions are the slot labels with their PARTUUIDs.
func (b *Backend) Status(ctx context.Context) (installer.Status, error) {
	st, err := Inspect(ctx, b.target())
	if err != nil {
		return installer.Status{}, fmt.Errorf("%w: %w", installer.ErrUnknown, err)
	}
	s := installer.Status{
		Backend:       b.Name(),
		BootedVersion: slotVersion(st.Booted),
		Staged:        st.Staged,
		Detail:        fmt.Sprintf("booted %s; passive %s; %s", st.Booted, st.Passive, st.PassiveStatus),
	}
	if st.Staged {
		s.StagedVersion = slotVersion(st.Passive)
	}
	return s, nil
}

func slotVersion(s Slot) string { return s.Label + " " + s.PARTUUID }

// Stage installs the configured image into the passive slot.
func (b *Backend) Stage(ctx context.Context) error {
	if b.cfg.Image == "" {
		return fmt.Errorf("gpt: %w", ErrNoImage)
	}
	o := Options{Target: b.target(), ImagePath: b.cfg.Image, SHA256: b.cfg.SHA256, Logger: b.log}
	if b.cfg.Sig != "" {
		var err error
		if o.Signature, err = ReadSignature(b.cfg.Sig); err != nil {
			return err
		}
		if o.PublicKey, err = ReadPublicKey(b.cfg.PubKey); err != nil {
			return err
		}
	}
	_, err := Install(ctx, o)
	return err
}

// MarkGood marks the booted slot good.
func (b *Backend) MarkGood(ctx context.Context) error {
	_, err := MarkGood(ctx, b.target())
	return err
}

// Rollback makes the other slot boot next, if it is verified and good.
func (b *Backend) Rollback(ctx context.Context) error {
	_, err := Rollback(ctx, b.target())
	return err
}
