// Package coordinator maintains /run/update-engine/coordinator.conf, the
// file through which Flatcar's update coordinator says who decides about
// reboots and what it is doing. Flatcar's login profile reads it: it
// reports "No Reboots" unless the file exists AND someone holds an
// exclusive flock on it, and then shows STATE. So the agent keeps the lock
// for as long as it runs, and replaces the file by renaming a locked copy
// over it, so the path is never without content or without a lock holder.
package coordinator

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/offpeak/offpeak/scheduler"
)

// Path is the well-known location, below paths.Layout's root.
const Path = "/run/update-engine/coordinator.conf"

// Name is what offpeak writes as NAME=.
const Name = "offpeak"

// State is the coordinator's STATE=.
type State string

// States, as Flatcar's coordinators write them.
const (
	Starting      State = "starting"
	Running       State = "running"
	RebootPlanned State = "reboot-planned" // a reboot waits for a window, slot or checks
	Rebooting     State = "rebooting"
)

// ErrHeld means another coordinator (locksmithd, a second agent) holds the
// file's lock.
var ErrHeld = errors.New("coordinator.conf is held by another update coordinator")

// File is the coordinator.conf this process owns. It is a
// scheduler.Observer.
type File struct {
	path     string
	strategy string

	mu      sync.Mutex
	f       *os.File // the locked file now at path
	state   State
	written string // content now at path
}

// Open creates path if needed, takes its exclusive lock without waiting and
// writes STATE=starting. ErrHeld (wrapped, with the holder's NAME when
// readable) means another coordinator runs.
func Open(path, strategy string) (*File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("coordinator: %w", err)
	}
	f, err := lockPath(path)
	if err != nil {
		return nil, err
	}
	c := &File{path: path, strategy: strategy, f: f}
	if err := c.Set(Starting); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// testHookOpened, when set, runs between opening the file at path and
// locking it.
var testHookOpened func()

// maxReplaced bounds how often lockPath starts over because the file it
// locked had been replaced.
const maxReplaced = 10

// lockPath opens the file at path and locks it. A holder replaces the file
// by renaming a locked copy over it and only then drops the old file's
// lock, so the file opened here may have been replaced before its lock
// could be taken; a lock on it would guard nothing, and the file now at
// path is tried instead.
func lockPath(path string) (*os.File, error) {
	for range maxReplaced {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return nil, fmt.Errorf("coordinator: %w", err)
		}
		if testHookOpened != nil {
			testHookOpened()
		}
		if err := lock(f); err != nil {
			f.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				holder := "unknown"
				if kv, rerr := Read(path); rerr == nil && kv["NAME"] != "" {
					holder = kv["NAME"]
				}
				return nil, fmt.Errorf("%w (NAME=%s)", ErrHeld, holder)
			}
			return nil, fmt.Errorf("coordinator: lock %s: %w", path, err)
		}
		current, err := isAt(f, path)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("coordinator: %w", err)
		}
		if current {
			return f, nil
		}
		f.Close()
	}
	return nil, fmt.Errorf("%w: %s was replaced %d times while being locked", ErrHeld, path, maxReplaced)
}

// isAt reports whether f is the file now at path (false when path is gone).
func isAt(f *os.File, path string) (bool, error) {
	fi, err := f.Stat()
	if err != nil {
		return false, err
	}
	pi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return os.SameFile(fi, pi), nil
}

func lock(f *os.File) error {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if !errors.Is(err, syscall.EINTR) {
			return err
		}
	}
}

// State returns the state last written.
func (c *File) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// Set writes state. The new content goes to a temporary file that is locked
// before it is renamed over path; only then is the old file's lock dropped,
// so a reader never finds path unlocked or half written.
func (c *File) Set(s State) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.write(s, c.strategy)
}

func (c *File) write(s State, strategy string) error {
	if c.f == nil {
		return fmt.Errorf("coordinator: %s is closed", c.path)
	}
	content := fmt.Sprintf("NAME=%s\nSTRATEGY=%s\nSTATE=%s\n", Name, shellSafe(strategy), s)
	if content == c.written {
		return nil
	}
	tmp, err := os.CreateTemp(filepath.Dir(c.path), "."+filepath.Base(c.path)+".*")
	if err != nil {
		return fmt.Errorf("coordinator: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(0o644); err != nil {
		return fmt.Errorf("coordinator: %w", err)
	}
	if _, err := tmp.WriteString(content); err != nil {
		return fmt.Errorf("coordinator: %w", err)
	}
	if err := lock(tmp); err != nil {
		return fmt.Errorf("coordinator: lock %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), c.path); err != nil {
		return fmt.Errorf("coordinator: %w", err)
	}
	ok = true
	c.f.Close() // drops the old inode's lock
	c.f = tmp
	c.state, c.strategy, c.written = s, strategy, content
	return nil
}

// Observe writes the STATE a decision maps to (see StateFor), and the
// strategy the decision was taken under, which a policy reload may change.
// A failed write is retried with the next decision.
func (c *File) Observe(r scheduler.Result) {
	c.mu.Lock()
	defer c.mu.Unlock()
	strategy := c.strategy
	if r.Strategy != "" {
		strategy = r.Strategy
	}
	_ = c.write(StateFor(r), strategy)
}

// StateFor is the STATE a decision maps to:
//   - a reboot asked for (phase "rebooting") → rebooting
//   - a dry-run "reboot", or an update staged and waiting for the window,
//     a slot or the checks → reboot-planned
//   - anything else → running
func StateFor(r scheduler.Result) State {
	switch {
	case r.Phase == scheduler.PhaseRebooting && !r.DryRun:
		return Rebooting
	case r.Decision == scheduler.DecisionReboot:
		return RebootPlanned
	case r.Staged != nil && r.Staged.State == scheduler.StagedYes.String():
		switch r.Decision {
		case scheduler.DecisionWaitWindow, scheduler.DecisionWaitSlot, scheduler.DecisionWaitHealth:
			return RebootPlanned
		}
	}
	return Running
}

// Close releases the lock and leaves the file, as Flatcar's coordinators
// do: an unlocked file reads as "no coordinator running".
func (c *File) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.f == nil {
		return nil
	}
	err := c.f.Close()
	c.f = nil
	return err
}

// Read parses a coordinator.conf (KEY=value lines).
func Read(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	kv := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok {
			kv[k] = v
		}
	}
	return kv, nil
}

// shellSafe keeps a value sourceable by the login profile.
func shellSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '-' || r == '_' || r == '.' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') {
			return r
		}
		return '_'
	}, s)
}
