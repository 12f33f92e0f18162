// Package memlocker is an in-memory plugins.Locker for tests and benchmarks
// of the plugin host: the same implementation runs in-process and behind the
// plugin protocol.
package memlocker

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/offpeak/offpeak/plugins"
)

type group struct {
	state   plugins.LockState
	changed chan struct{} // closed and replaced on every change
}

// Locker keeps every group's semaphore in memory.
type Locker struct {
	mu     sync.Mutex
	groups map[string]*group
}

// New returns an empty locker.
func New() *Locker { return &Locker{groups: map[string]*group{}} }

var _ plugins.Locker = (*Locker)(nil)

// Configure accepts an empty config or an empty JSON object.
func (l *Locker) Configure(_ context.Context, config json.RawMessage) error {
	var v struct{}
	return plugins.DecodeConfig(config, &v)
}

func (l *Locker) get(name string, slots int) (*group, error) {
	if name == "" {
		return nil, fmt.Errorf("memlocker: empty group: %w", plugins.ErrInvalidArgument)
	}
	g, ok := l.groups[name]
	if !ok {
		g = &group{state: plugins.LockState{Group: name, Slots: slots, Holders: []plugins.Holder{}}, changed: make(chan struct{})}
		l.groups[name] = g
	}
	return g, nil
}

func (g *group) bump() {
	g.state.Revision++
	close(g.changed)
	g.changed = make(chan struct{})
}

func (g *group) snapshot() plugins.LockState {
	s := g.state
	s.Holders = slices.Clone(g.state.Holders)
	return s
}

func (l *Locker) Acquire(_ context.Context, req plugins.AcquireRequest) (plugins.AcquireResult, error) {
	if req.Holder.ID == "" {
		return plugins.AcquireResult{}, fmt.Errorf("memlocker: empty holder id: %w", plugins.ErrInvalidArgument)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	g, err := l.get(req.Group, req.Slots)
	if err != nil {
		return plugins.AcquireResult{}, err
	}
	var res plugins.AcquireResult
	if i := slices.IndexFunc(g.state.Holders, func(h plugins.Holder) bool { return h.ID == req.Holder.ID }); i >= 0 {
		g.state.Holders[i] = req.Holder
		g.bump()
		res.Granted = true
		res.State = g.snapshot()
		return res, nil
	}
	if g.state.Frozen {
		return plugins.AcquireResult{}, fmt.Errorf("memlocker: %q: %w", req.Group, plugins.ErrFrozen)
	}
	if req.ReclaimStale {
		now := req.Now
		if now.IsZero() {
			now = time.Now()
		}
		kept := g.state.Holders[:0]
		for _, h := range g.state.Holders {
			if !h.Deadline.IsZero() && now.After(h.Deadline) {
				res.Reclaimed = append(res.Reclaimed, h)
				continue
			}
			kept = append(kept, h)
		}
		g.state.Holders = kept
	}
	if len(g.state.Holders) < g.state.Slots {
		g.state.Holders = append(g.state.Holders, req.Holder)
		res.Granted = true
	}
	if res.Granted || len(res.Reclaimed) > 0 {
		g.bump()
	}
	res.State = g.snapshot()
	return res, nil
}

func (l *Locker) Release(_ context.Context, req plugins.ReleaseRequest) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	g, err := l.get(req.Group, 0)
	if err != nil {
		return err
	}
	i := slices.IndexFunc(g.state.Holders, func(h plugins.Holder) bool { return h.ID == req.ID })
	if i < 0 {
		return fmt.Errorf("memlocker: %q in %q: %w", req.ID, req.Group, plugins.ErrNotHolder)
	}
	g.state.Holders = slices.Delete(g.state.Holders, i, i+1)
	g.bump()
	return nil
}

func (l *Locker) Status(_ context.Context, name string) (plugins.LockState, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	g, err := l.get(name, 0)
	if err != nil {
		return plugins.LockState{}, err
	}
	return g.snapshot(), nil
}

func (l *Locker) Wait(ctx context.Context, name string, revision uint64) (plugins.LockState, error) {
	for {
		l.mu.Lock()
		g, err := l.get(name, 0)
		if err != nil {
			l.mu.Unlock()
			return plugins.LockState{}, err
		}
		if g.state.Revision != revision {
			s := g.snapshot()
			l.mu.Unlock()
			return s, nil
		}
		ch := g.changed
		l.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return plugins.LockState{}, ctx.Err()
		}
	}
}

func (l *Locker) SetSlots(_ context.Context, name string, slots int) (plugins.LockState, error) {
	if slots < 0 {
		return plugins.LockState{}, fmt.Errorf("memlocker: slots %d: %w", slots, plugins.ErrInvalidArgument)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	g, err := l.get(name, slots)
	if err != nil {
		return plugins.LockState{}, err
	}
	g.state.Slots = slots
	g.bump()
	return g.snapshot(), nil
}

func (l *Locker) Freeze(_ context.Context, req plugins.FreezeRequest) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	g, err := l.get(req.Group, 0)
	if err != nil {
		return err
	}
	g.state.Frozen, g.state.FrozenReason, g.state.FrozenBy, g.state.FrozenAt = true, req.Reason, req.By, req.At
	g.bump()
	return nil
}

func (l *Locker) Thaw(_ context.Context, name string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	g, err := l.get(name, 0)
	if err != nil {
		return err
	}
	g.state.Frozen, g.state.FrozenReason, g.state.FrozenBy, g.state.FrozenAt = false, "", "", time.Time{}
	g.bump()
	return nil
}
