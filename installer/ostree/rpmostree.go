package ostree

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/offpeak/offpeak/installer"
)

// RPMOSTreeName is the rpm-ostree backend's name.
const RPMOSTreeName = "rpm-ostree"

// RPMOSTree is the installer.Backend for rpm-ostree hosts.
type RPMOSTree struct {
	Runner Runner // nil: ExecRunner
}

var _ installer.Backend = (*RPMOSTree)(nil)

// Name returns "rpm-ostree".
func (b *RPMOSTree) Name() string { return RPMOSTreeName }

func (b *RPMOSTree) runner() Runner {
	if b.Runner != nil {
		return b.Runner
	}
	return ExecRunner{}
}

// Status runs `rpm-ostree status --json`.
func (b *RPMOSTree) Status(ctx context.Context) (installer.Status, error) {
	out, err := b.runner().Run(ctx, []string{"rpm-ostree", "status", "--json"})
	if err != nil {
		return installer.Status{Backend: RPMOSTreeName}, fmt.Errorf("%w: %w", installer.ErrUnknown, err)
	}
	return ParseRPMOSTreeStatus(out)
}

// Stage runs `rpm-ostree upgrade`, which stages the new deployment for the
// next boot and does not reboot without --reboot.
func (b *RPMOSTree) Stage(ctx context.Context) error {
	if _, err := b.runner().Run(ctx, []string{"rpm-ostree", "upgrade"}); err != nil {
		return fmt.Errorf("stage: %w", err)
	}
	return nil
}

// MarkGood does nothing: OSTree keeps no per-boot success marker.
func (b *RPMOSTree) MarkGood(context.Context) error { return nil }

// Rollback runs `rpm-ostree rollback`: the previous deployment becomes the
// default for the next boot.
func (b *RPMOSTree) Rollback(ctx context.Context) error {
	if _, err := b.runner().Run(ctx, []string{"rpm-ostree", "rollback"}); err != nil {
		return fmt.Errorf("rollback: %w", err)
	}
	return nil
}

type rpmOSTreeStatus struct {
	Deployments *[]rpmOSTreeDeployment `json:"deployments"`
	Transaction json.RawMessage        `json:"transaction"`
}

type rpmOSTreeDeployment struct {
	ID                 string `json:"id"`
	OSName             string `json:"osname"`
	Checksum           string `json:"checksum"`
	Version            string `json:"version"`
	Origin             string `json:"origin"`
	ContainerImageRef  string `json:"container-image-reference"`
	Booted             bool   `json:"booted"`
	Staged             bool   `json:"staged"`
	FinalizationLocked bool   `json:"finalization-locked"`
}

func (d rpmOSTreeDeployment) version() string {
	if d.Version != "" {
		return d.Version
	}
	return shortChecksum(d.Checksum)
}

func (d rpmOSTreeDeployment) source() string {
	if d.ContainerImageRef != "" {
		return d.ContainerImageRef
	}
	return d.Origin
}

// ParseRPMOSTreeStatus reads `rpm-ostree status --json`. The staged update
// is the deployment marked "staged": true, or else a non-booted deployment
// at index 0 (the default for the next boot, written without staging).
// Malformed input returns an error wrapping installer.ErrUnknown.
func ParseRPMOSTreeStatus(data []byte) (installer.Status, error) {
	st := installer.Status{Backend: RPMOSTreeName}
	var raw rpmOSTreeStatus
	if err := json.Unmarshal(data, &raw); err != nil {
		return st, fmt.Errorf("%w: rpm-ostree status --json: malformed JSON: %w", installer.ErrUnknown, err)
	}
	if raw.Deployments == nil {
		return st, fmt.Errorf("%w: rpm-ostree status --json: no \"deployments\" array", installer.ErrUnknown)
	}
	deps := *raw.Deployments
	booted := -1
	for i, d := range deps {
		if d.Checksum == "" {
			return st, fmt.Errorf("%w: rpm-ostree status --json: deployment %d has no checksum", installer.ErrUnknown, i)
		}
		if d.Booted {
			if booted >= 0 {
				return st, fmt.Errorf("%w: rpm-ostree status --json: deployments %d and %d both booted", installer.ErrUnknown, booted, i)
			}
			booted = i
		}
	}
	if booted < 0 {
		return st, fmt.Errorf("%w: rpm-ostree status --json: no booted deployment", installer.ErrUnknown)
	}
	b := deps[booted]
	st.BootedVersion = b.version()

	var notes []string
	next := -1
	for i, d := range deps {
		if d.Staged && !d.Booted {
			next = i
			break
		}
	}
	if next < 0 && booted > 0 {
		next = 0 // pending deployment: default at next boot, not staged
	}
	if next >= 0 {
		n := deps[next]
		switch {
		case n.FinalizationLocked:
			// A locked staged deployment is discarded by a plain reboot;
			// rebooting for it would boot the same version again.
			notes = append(notes, fmt.Sprintf("staged %s is finalization-locked (a plain reboot will not apply it)", n.version()))
		default:
			st.Staged = true
			st.StagedVersion = n.version()
			kind := "pending"
			if n.Staged {
				kind = "staged"
			}
			notes = append(notes, fmt.Sprintf("%s %s (%s)", kind, n.version(), shortChecksum(n.Checksum)))
		}
	}
	if src := b.source(); src != "" {
		notes = append(notes, "booted from "+src)
	}
	if t := bytes.TrimSpace(raw.Transaction); len(t) > 0 && string(t) != "null" {
		notes = append(notes, "transaction in progress")
	}
	st.Detail = strings.Join(notes, "; ")
	return st, nil
}
