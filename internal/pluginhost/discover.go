package pluginhost

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/offpeak/offpeak/internal/safepath"
)

// BinaryPrefix is how an installed plugin's file name starts: the plugin
// "foo" is the executable offpeak-plugin-foo in one of the plugin dirs.
const BinaryPrefix = "offpeak-plugin-"

// installed is one plugin binary found on disk.
type installed struct {
	name string
	path string
	// shadowed lists files of the same name in earlier dirs.
	shadowed []string
}

// refusal is a plugin file offpeak will not run: it, its directory or a
// directory above could be changed by someone other than root (or the
// user running offpeak).
type refusal struct {
	path string
	err  error
}

// discovery is what discover found.
type discovery struct {
	found   map[string]*installed
	refused map[string]refusal
	// problems are directories or files that could not be read.
	problems []error
}

// discover scans dirs in order; a later dir's binary (or refusal) replaces
// an earlier one of the same name. Missing dirs are fine. Files that are
// not executable regular files (after following symlinks) are skipped.
// Executables are refused unless safepath.Check passes for them (which
// covers their directory and every directory above), as sshd's StrictModes
// does for its keys: a plugin runs as root.
func discover(dirs []string) discovery {
	d := discovery{found: map[string]*installed{}, refused: map[string]refusal{}}
	for _, dir := range dirs {
		entries, err := os.ReadDir(dir)
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				d.problems = append(d.problems, fmt.Errorf("plugin dir %s: %w", dir, err))
			}
			continue
		}
		dirErr := safepath.Check(dir)
		candidates := 0
		for _, e := range entries {
			name, ok := strings.CutPrefix(e.Name(), BinaryPrefix)
			if !ok || name == "" {
				continue
			}
			path := filepath.Join(dir, e.Name())
			st, err := os.Stat(path)
			if err != nil {
				d.problems = append(d.problems, fmt.Errorf("plugin %s: %w", path, err))
				continue
			}
			if !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
				continue
			}
			candidates++
			err = dirErr
			if err == nil {
				err = safepath.Check(path)
			}
			if err != nil {
				delete(d.found, name)
				d.refused[name] = refusal{path: path, err: fmt.Errorf("plugin %s refused: %w", path, err)}
				continue
			}
			delete(d.refused, name)
			in := &installed{name: name, path: path}
			if prev, ok := d.found[name]; ok {
				in.shadowed = append(prev.shadowed, prev.path)
			}
			d.found[name] = in
		}
		if dirErr != nil && candidates == 0 {
			d.problems = append(d.problems, fmt.Errorf("plugin dir %s refused: %w", dir, dirErr))
		}
	}
	return d
}

func sortedNames[V any](m map[string]V) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// fileSHA256 returns the hex SHA-256 of the file at path.
func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// parsePin checks that a pin is a SHA-256 in hex and decodes it.
func parsePin(name, pin string) ([]byte, error) {
	pin = strings.ToLower(strings.TrimSpace(pin))
	sum, err := hex.DecodeString(pin)
	if err != nil || len(sum) != sha256.Size {
		return nil, fmt.Errorf("pin for plugin %q is not a SHA-256 hex digest (64 hex characters): %q", name, pin)
	}
	return sum, nil
}
