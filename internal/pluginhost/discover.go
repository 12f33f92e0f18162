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

// discover scans dirs in order; a later dir's binary replaces an earlier
// one of the same name. Missing dirs are fine. Files that are not
// executable regular files (after following symlinks) are skipped.
func discover(dirs []string) (map[string]*installed, []error) {
	found := map[string]*installed{}
	var problems []error
	for _, dir := range dirs {
		entries, err := os.ReadDir(dir)
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				problems = append(problems, fmt.Errorf("plugin dir %s: %w", dir, err))
			}
			continue
		}
		for _, e := range entries {
			name, ok := strings.CutPrefix(e.Name(), BinaryPrefix)
			if !ok || name == "" {
				continue
			}
			path := filepath.Join(dir, e.Name())
			st, err := os.Stat(path)
			if err != nil {
				problems = append(problems, fmt.Errorf("plugin %s: %w", path, err))
				continue
			}
			if !st.Mode().IsRegular() || st.Mode().Perm()&0o111 == 0 {
				continue
			}
			in := &installed{name: name, path: path}
			if prev, ok := found[name]; ok {
				in.shadowed = append(prev.shadowed, prev.path)
			}
			found[name] = in
		}
	}
	return found, problems
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
