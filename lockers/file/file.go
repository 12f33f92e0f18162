// Package file is the built-in locker for one host or a shared filesystem:
// each group's semaphore is a JSON file, changed only under an exclusive
// flock on a lock file beside it and replaced atomically, so a holder's slot
// survives its process dying and the machine rebooting.
package file

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/offpeak/offpeak/internal/registry"
	"github.com/offpeak/offpeak/internal/statefile"
	"github.com/offpeak/offpeak/plugins"
)

// Config is the [lock.config] table for plugin "file".
type Config struct {
	// Dir holds one <group>.json and <group>.lock per group. The agent fills
	// it in from its state directory when the policy leaves it out.
	Dir string `json:"dir"`
	// PollInterval is how often Wait looks at the file for a change.
	PollInterval plugins.Duration `json:"poll_interval"`
}

// SecretKeys: the file locker has no secret settings.
func (Config) SecretKeys() []string { return nil }

// semaphore is the on-disk record. total_slots and holders mirror the
// airlock etcd layout so every backend reads the same way.
type semaphore struct {
	TotalSlots int                       `json:"total_slots"`
	Holders    []string                  `json:"holders"`
	Meta       map[string]plugins.Holder `json:"offpeak_holders,omitempty"`
	Frozen     *frozen                   `json:"frozen,omitempty"`
	Revision   uint64                    `json:"revision"`
	Events     []event                   `json:"events,omitempty"`
}

type frozen struct {
	Reason string    `json:"reason"`
	By     string    `json:"by"`
	At     time.Time `json:"at"`
}

// event records why a slot was taken away from its holder.
type event struct {
	At     time.Time      `json:"at"`
	Kind   string         `json:"kind"` // "released", "reclaimed"
	Holder plugins.Holder `json:"holder"`
	Reason string         `json:"reason,omitempty"`
}

const maxEvents = 50

var groupRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// Locker implements plugins.Locker on a directory.
type Locker struct {
	log  *slog.Logger
	cfg  Config
	now  func() time.Time
	poll time.Duration
}

// New returns an unconfigured file locker.
func New(log *slog.Logger) plugins.Locker {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Locker{log: log, now: time.Now, poll: 250 * time.Millisecond}
}

// Module registers the file locker with offpeak's built-ins.
func Module() registry.Module[plugins.Locker] {
	return registry.Module[plugins.Locker]{Name: "file", Config: func() any { return &Config{} }, New: registry.Logged(New)}
}

// Configure sets the directory.
func (l *Locker) Configure(_ context.Context, raw json.RawMessage) error {
	var cfg Config
	if err := plugins.DecodeConfig(raw, &cfg); err != nil {
		return err
	}
	if cfg.Dir == "" {
		return fmt.Errorf("%w: dir: missing", plugins.ErrInvalidArgument)
	}
	if !filepath.IsAbs(cfg.Dir) {
		return fmt.Errorf("%w: dir: %q is not absolute", plugins.ErrInvalidArgument, cfg.Dir)
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return fmt.Errorf("%w: %w", plugins.ErrUnavailable, err)
	}
	if cfg.PollInterval > 0 {
		l.poll = cfg.PollInterval.D()
	}
	l.cfg = cfg
	return nil
}

func (l *Locker) paths(group string) (data, lock string, err error) {
	if l.cfg.Dir == "" {
		return "", "", fmt.Errorf("%w: not configured", plugins.ErrInvalidArgument)
	}
	if err := plugins.ValidateName("group", group); err != nil {
		return "", "", err
	}
	if !groupRe.MatchString(group) {
		return "", "", fmt.Errorf("%w: group %q: the file locker takes letters, digits, '.', '_' and '-'", plugins.ErrInvalidArgument, group)
	}
	return filepath.Join(l.cfg.Dir, group+".json"), filepath.Join(l.cfg.Dir, group+".lock"), nil
}

// update runs fn on the group's semaphore under the group's flock and writes
// the result when fn reports a change. create is the slot count of a group
// that has none yet; 0 leaves it uncreated.
func (l *Locker) update(ctx context.Context, group string, create int, fn func(*semaphore) (bool, error)) (semaphore, error) {
	data, lockPath, err := l.paths(group)
	if err != nil {
		return semaphore{}, err
	}
	lf, err := os.OpenFile(lockPath, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return semaphore{}, fmt.Errorf("%w: %w", plugins.ErrUnavailable, err)
	}
	defer lf.Close()
	if err := flock(ctx, lf); err != nil {
		return semaphore{}, err
	}
	defer unix.Flock(int(lf.Fd()), unix.LOCK_UN)

	s, err := read(data)
	if err != nil {
		return semaphore{}, err
	}
	if s.TotalSlots == 0 {
		// Not created yet (a freeze alone does not create the group): the
		// call that creates it sets the count.
		s.TotalSlots = create
	}
	changed, err := fn(&s)
	if err != nil || !changed {
		return s, err
	}
	s.Revision++
	if len(s.Events) > maxEvents {
		s.Events = s.Events[len(s.Events)-maxEvents:]
	}
	if err := writeAtomic(data, s); err != nil {
		return semaphore{}, fmt.Errorf("%w: %w", plugins.ErrUnavailable, err)
	}
	return s, nil
}

// flock takes an exclusive lock, giving up when ctx ends.
func flock(ctx context.Context, f *os.File) error {
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			return fmt.Errorf("%w: flock: %w", plugins.ErrUnavailable, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: waiting for the lock file: %w", plugins.ErrUnavailable, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func read(path string) (semaphore, error) {
	var s semaphore
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return s, fmt.Errorf("%w: %w", plugins.ErrUnavailable, err)
	}
	if err := json.Unmarshal(b, &s); err != nil {
		// Refuse rather than overwrite: the holders in a damaged file would
		// otherwise be lost and their slots handed out twice.
		return s, fmt.Errorf("%w: %s is damaged: %w", plugins.ErrUnavailable, path, err)
	}
	if s.TotalSlots < 0 {
		return s, fmt.Errorf("%w: %s: negative total_slots", plugins.ErrUnavailable, path)
	}
	return s, nil
}

func writeAtomic(path string, s semaphore) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return statefile.WriteAtomic(path, append(b, '\n'), 0o644)
}

func (l *Locker) state(group string, s semaphore) plugins.LockState {
	st := plugins.LockState{Group: group, Slots: s.TotalSlots, Revision: s.Revision, Holders: []plugins.Holder{}}
	for _, id := range s.Holders {
		h, ok := s.Meta[id]
		if !ok {
			h = plugins.Holder{ID: id}
		}
		st.Holders = append(st.Holders, h)
	}
	if s.Frozen != nil {
		st.Frozen, st.FrozenReason, st.FrozenBy, st.FrozenAt = true, s.Frozen.Reason, s.Frozen.By, s.Frozen.At
	}
	return st
}

// Acquire grants a slot when one is free and the group is not frozen.
func (l *Locker) Acquire(ctx context.Context, req plugins.AcquireRequest) (plugins.AcquireResult, error) {
	if err := plugins.ValidateAcquire(req); err != nil {
		return plugins.AcquireResult{}, err
	}
	now := req.Now
	if now.IsZero() {
		now = l.now()
	}
	var res plugins.AcquireResult
	s, err := l.update(ctx, req.Group, max(req.Slots, 1), func(s *semaphore) (bool, error) {
		if s.Meta == nil {
			s.Meta = map[string]plugins.Holder{}
		}
		stale := func(h plugins.Holder) bool {
			return req.ReclaimStale && s.Frozen == nil && !h.Deadline.IsZero() && !now.Before(h.Deadline)
		}
		if slices.Contains(s.Holders, req.Holder.ID) {
			prev, ok := s.Meta[req.Holder.ID]
			var collision error
			if ok {
				collision = plugins.SameNode(prev, req.Holder, req.PreviousBootID)
			}
			if collision == nil {
				h := req.Holder
				if ok && !prev.AcquiredAt.IsZero() {
					h.AcquiredAt = prev.AcquiredAt
				}
				s.Meta[h.ID] = h
				res.Granted = true
				return true, nil
			}
			if !stale(prev) {
				return false, collision
			}
			// Another machine's record, past its deadline: reclaimed below.
		}
		if s.Frozen != nil {
			return false, nil
		}
		if req.ReclaimStale {
			kept := s.Holders[:0]
			for _, id := range s.Holders {
				h := s.Meta[id]
				if stale(h) {
					if h.ID == "" {
						h.ID = id
					}
					res.Reclaimed = append(res.Reclaimed, h)
					s.Events = append(s.Events, event{At: now, Kind: "reclaimed", Holder: h,
						Reason: fmt.Sprintf("stale: deadline %s passed; reclaimed by %s", h.Deadline.Format(time.RFC3339), req.Holder.ID)})
					delete(s.Meta, id)
					continue
				}
				kept = append(kept, id)
			}
			s.Holders = kept
		}
		if len(s.Holders) >= s.TotalSlots {
			return len(res.Reclaimed) > 0, nil
		}
		h := req.Holder
		if h.AcquiredAt.IsZero() {
			h.AcquiredAt = now
		}
		s.Holders = append(s.Holders, h.ID)
		s.Meta[h.ID] = h
		res.Granted = true
		return true, nil
	})
	if err != nil {
		return plugins.AcquireResult{}, err
	}
	for _, h := range res.Reclaimed {
		l.log.Warn("reclaimed a stale slot", "group", req.Group, "holder", h.ID, "deadline", h.Deadline)
	}
	res.State = l.state(req.Group, s)
	return res, nil
}

// Release gives a slot back.
func (l *Locker) Release(ctx context.Context, req plugins.ReleaseRequest) error {
	if err := plugins.ValidateName("group", req.Group); err != nil {
		return err
	}
	if err := plugins.ValidateName("holder id", req.ID); err != nil {
		return err
	}
	_, err := l.update(ctx, req.Group, 0, func(s *semaphore) (bool, error) {
		i := slices.Index(s.Holders, req.ID)
		if i < 0 {
			return false, fmt.Errorf("%w: %q in group %q", plugins.ErrNotHolder, req.ID, req.Group)
		}
		h := s.Meta[req.ID]
		if h.ID == "" {
			h.ID = req.ID
		}
		s.Holders = slices.Delete(s.Holders, i, i+1)
		delete(s.Meta, req.ID)
		s.Events = append(s.Events, event{At: l.now(), Kind: "released", Holder: h, Reason: req.Reason})
		return true, nil
	})
	return err
}

// Status reads the group without changing it.
func (l *Locker) Status(ctx context.Context, group string) (plugins.LockState, error) {
	data, _, err := l.paths(group)
	if err != nil {
		return plugins.LockState{}, err
	}
	s, err := read(data)
	if err != nil {
		return plugins.LockState{}, err
	}
	if s.TotalSlots == 0 {
		s.TotalSlots = 1
	}
	return l.state(group, s), nil
}

// Wait polls the file until its revision changes; a file has no watch
// that works on every shared filesystem.
func (l *Locker) Wait(ctx context.Context, group string, revision uint64) (plugins.LockState, error) {
	t := time.NewTicker(l.poll)
	defer t.Stop()
	for {
		st, err := l.Status(ctx, group)
		if err != nil || st.Revision != revision {
			return st, err
		}
		select {
		case <-ctx.Done():
			return st, ctx.Err()
		case <-t.C:
		}
	}
}

// SetSlots changes the slot count; holders above it keep their slots.
func (l *Locker) SetSlots(ctx context.Context, group string, slots int) (plugins.LockState, error) {
	if slots < 1 {
		return plugins.LockState{}, fmt.Errorf("%w: slots must be at least 1", plugins.ErrInvalidArgument)
	}
	s, err := l.update(ctx, group, slots, func(s *semaphore) (bool, error) {
		s.TotalSlots = slots
		return true, nil
	})
	if err != nil {
		return plugins.LockState{}, err
	}
	return l.state(group, s), nil
}

// Freeze stops new grants in the group. A group not created yet is created
// with req.Slots, the count it has once thawed.
func (l *Locker) Freeze(ctx context.Context, req plugins.FreezeRequest) error {
	if err := plugins.ValidateName("group", req.Group); err != nil {
		return err
	}
	at := req.At
	if at.IsZero() {
		at = l.now()
	}
	_, err := l.update(ctx, req.Group, max(req.Slots, 1), func(s *semaphore) (bool, error) {
		s.Frozen = &frozen{Reason: req.Reason, By: req.By, At: at}
		return true, nil
	})
	return err
}

// Thaw lifts a freeze.
func (l *Locker) Thaw(ctx context.Context, group string) error {
	_, err := l.update(ctx, group, 0, func(s *semaphore) (bool, error) {
		if s.Frozen == nil {
			return false, nil
		}
		s.Frozen = nil
		return true, nil
	})
	return err
}
