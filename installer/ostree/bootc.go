package ostree

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/offpeak/offpeak/installer"
)

// BootcName is the bootc backend's name.
const BootcName = "bootc"

// Bootc is the installer.Backend for bootc hosts.
type Bootc struct {
	Runner Runner // nil: ExecRunner
}

var _ installer.Backend = (*Bootc)(nil)

// Name returns "bootc".
func (b *Bootc) Name() string { return BootcName }

func (b *Bootc) runner() Runner {
	if b.Runner != nil {
		return b.Runner
	}
	return ExecRunner{}
}

// Status runs `bootc status --format=json`.
func (b *Bootc) Status(ctx context.Context) (installer.Status, error) {
	out, err := b.runner().Run(ctx, []string{"bootc", "status", "--format=json"})
	if err != nil {
		return installer.Status{Backend: BootcName}, fmt.Errorf("%w: %w", installer.ErrUnknown, err)
	}
	return ParseBootcStatus(out)
}

// Stage runs `bootc upgrade`, which fetches and stages the new image for
// the next boot; without --apply it does not reboot.
func (b *Bootc) Stage(ctx context.Context) error {
	if _, err := b.runner().Run(ctx, []string{"bootc", "upgrade"}); err != nil {
		return fmt.Errorf("stage: %w", err)
	}
	return nil
}

// MarkGood does nothing: OSTree keeps no per-boot success marker.
func (b *Bootc) MarkGood(context.Context) error { return nil }

// Rollback runs `bootc rollback`: the rollback deployment becomes the
// default for the next boot.
func (b *Bootc) Rollback(ctx context.Context) error {
	if _, err := b.runner().Run(ctx, []string{"bootc", "rollback"}); err != nil {
		return fmt.Errorf("rollback: %w", err)
	}
	return nil
}

type bootcHost struct {
	APIVersion string           `json:"apiVersion"`
	Kind       string           `json:"kind"`
	Status     *bootcHostStatus `json:"status"`
}

type bootcHostStatus struct {
	Staged         *bootcEntry `json:"staged"`
	Booted         *bootcEntry `json:"booted"`
	Rollback       *bootcEntry `json:"rollback"`
	RollbackQueued bool        `json:"rollbackQueued"`
}

type bootcEntry struct {
	Image *struct {
		Image struct {
			Image     string `json:"image"`
			Transport string `json:"transport"`
		} `json:"image"`
		Version     string `json:"version"`
		ImageDigest string `json:"imageDigest"`
	} `json:"image"`
	Ostree *struct {
		Checksum string `json:"checksum"`
	} `json:"ostree"`
}

func (e *bootcEntry) version() string {
	switch {
	case e.Image != nil && e.Image.Version != "":
		return e.Image.Version
	case e.Image != nil && e.Image.ImageDigest != "":
		return e.Image.ImageDigest
	case e.Ostree != nil:
		return shortChecksum(e.Ostree.Checksum)
	}
	return ""
}

func (e *bootcEntry) describe() string {
	if e.Image == nil {
		if e.Ostree != nil {
			return "ostree " + shortChecksum(e.Ostree.Checksum)
		}
		return "unknown"
	}
	s := e.Image.Image.Image
	if e.Image.ImageDigest != "" {
		s += "@" + e.Image.ImageDigest
	}
	return s
}

// ParseBootcStatus reads `bootc status --format=json` (a BootcHost
// object). status.staged, when present, is the update for the next boot; a
// queued rollback also counts, since the next boot switches deployments.
// Malformed input returns an error wrapping installer.ErrUnknown.
func ParseBootcStatus(data []byte) (installer.Status, error) {
	st := installer.Status{Backend: BootcName}
	var h bootcHost
	if err := json.Unmarshal(data, &h); err != nil {
		return st, fmt.Errorf("%w: bootc status --format=json: malformed JSON: %w", installer.ErrUnknown, err)
	}
	if h.Kind != "BootcHost" || !strings.HasPrefix(h.APIVersion, "org.containers.bootc/") {
		return st, fmt.Errorf("%w: bootc status --format=json: not a BootcHost (apiVersion %q, kind %q)", installer.ErrUnknown, h.APIVersion, h.Kind)
	}
	if h.Status == nil || h.Status.Booted == nil {
		return st, fmt.Errorf("%w: bootc status --format=json: no booted deployment (host not booted through bootc)", installer.ErrUnknown)
	}
	s := h.Status
	if s.Booted.Image == nil && s.Booted.Ostree == nil {
		return st, fmt.Errorf("%w: bootc status --format=json: booted entry has neither image nor ostree state", installer.ErrUnknown)
	}
	st.BootedVersion = s.Booted.version()
	notes := []string{"booted " + s.Booted.describe()}
	switch {
	case s.Staged != nil:
		st.Staged = true
		st.StagedVersion = s.Staged.version()
		notes = append([]string{"staged " + s.Staged.describe()}, notes...)
	case s.RollbackQueued && s.Rollback != nil:
		st.Staged = true
		st.StagedVersion = s.Rollback.version()
		notes = append([]string{"rollback queued to " + s.Rollback.describe()}, notes...)
	}
	st.Detail = strings.Join(notes, "; ")
	return st, nil
}
