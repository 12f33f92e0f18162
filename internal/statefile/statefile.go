// Package statefile writes small JSON files atomically: a temporary file in the
// same directory, fsync, rename, fsync of the directory. A crash at any point
// leaves either the old or the new content, never a torn file.
package statefile

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// ErrCorrupt means the file exists but does not decode.
var ErrCorrupt = errors.New("state file is corrupt")

// File is a JSON document on disk.
type File struct {
	Path string
}

// Load decodes the file into v. A missing file leaves v untouched and
// returns fs.ErrNotExist (wrapped).
func (f File) Load(v any) error {
	b, err := os.ReadFile(f.Path)
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrCorrupt, f.Path, err)
	}
	return nil
}

// Save encodes v and replaces the file atomically.
func (f File) Save(v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	return WriteAtomic(f.Path, append(b, '\n'), 0o644)
}

// WriteAtomic replaces path with data.
func WriteAtomic(path string, data []byte, perm fs.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	name := tmp.Name()
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(name)
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("state: write %s: %w", name, err)
	}
	if err := tmp.Chmod(perm); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("state: fsync %s: %w", name, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	if err := os.Rename(name, path); err != nil {
		return fmt.Errorf("state: %w", err)
	}
	ok = true
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("state: fsync %s: %w", dir, err)
	}
	return nil
}
