package gpt

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/offpeak/offpeak/internal/statefile"
)

// InstallResult is how the last install into a slot ended.
type InstallResult string

const (
	// InstallStarted: the slot was marked unbootable and writing began;
	// no result was recorded, so the install is running or was killed.
	InstallStarted InstallResult = "started"
	// InstallFailed: the install ended with Error; the slot stays
	// unbootable.
	InstallFailed InstallResult = "failed"
	// InstallVerified: the image was written, checked and made bootable.
	InstallVerified InstallResult = "verified"
)

// InstallRecord is what offpeak remembers of the last install into one
// slot, so that status and rollback can say why a slot is unbootable. It
// lives in Target.RecordDir as <PARTUUID>.json, written atomically.
type InstallRecord struct {
	Disk     string        `json:"disk"`
	Slot     string        `json:"slot"`
	PARTUUID string        `json:"partuuid"`
	Result   InstallResult `json:"result"`
	Error    string        `json:"error,omitempty"`
	Started  time.Time     `json:"started"`
	Finished time.Time     `json:"finished,omitzero"`
	Bytes    int64         `json:"bytes,omitempty"`
	SHA256   string        `json:"sha256,omitempty"`
	Verified string        `json:"verified,omitempty"`
}

// Why says in words how the install ended, as a clause about the slot
// ("its last install, started …, failed: …").
func (r InstallRecord) Why() string {
	at := r.Started.UTC().Format(time.RFC3339)
	switch r.Result {
	case InstallFailed:
		return fmt.Sprintf("its last install, started %s, failed: %s", at, r.Error)
	case InstallStarted:
		return fmt.Sprintf("its last install, started %s, did not finish (interrupted, or still running)", at)
	case InstallVerified:
		return fmt.Sprintf("its last install, started %s, was verified (%s)", at, r.Verified)
	}
	return fmt.Sprintf("its last install, started %s, has an unknown result %q", at, r.Result)
}

func recordPath(dir, partuuid string) string {
	return filepath.Join(dir, strings.ToLower(partuuid)+".json")
}

// ReadInstallRecord returns the record of the slot with this PARTUUID, or
// nil when there is none (or dir is empty: records are off).
func ReadInstallRecord(dir, partuuid string) (*InstallRecord, error) {
	if dir == "" {
		return nil, nil
	}
	var r InstallRecord
	if err := (statefile.File{Path: recordPath(dir, partuuid)}).Load(&r); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("install record: %w", err)
	}
	return &r, nil
}

// InstallRecords returns every record in dir, sorted by start time; a
// missing dir holds none. Unreadable records are reported as errors beside
// the good ones.
func InstallRecords(dir string) ([]InstallRecord, []error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, []error{fmt.Errorf("install records: %w", err)}
	}
	var out []InstallRecord
	var errs []error
	for _, e := range ents {
		name := e.Name()
		if e.IsDir() || strings.HasPrefix(name, ".") || !strings.HasSuffix(name, ".json") {
			continue
		}
		r, err := ReadInstallRecord(dir, strings.TrimSuffix(name, ".json"))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if r != nil {
			out = append(out, *r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Started.Before(out[j].Started) })
	return out, errs
}

// writeInstallRecord replaces the slot's record; a no-op without a dir.
func writeInstallRecord(dir string, r InstallRecord) error {
	if dir == "" {
		return nil
	}
	return statefile.File{Path: recordPath(dir, r.PARTUUID)}.Save(r)
}
