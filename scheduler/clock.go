package scheduler

import (
	"context"
	"sort"
	"sync"
	"time"
)

// Clock is the agent's only source of time, so tests and the simulator can
// drive it.
type Clock interface {
	Now() time.Time
	// After delivers the time once d has passed.
	After(d time.Duration) <-chan time.Time
}

// RealClock is the wall clock.
type RealClock struct{}

func (RealClock) Now() time.Time                         { return time.Now() }
func (RealClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Sleep waits d on c, or until ctx ends.
func Sleep(ctx context.Context, c Clock, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-c.After(d):
		return nil
	}
}

// FakeClock is a manual clock. Advance moves it and fires due timers. With
// AutoAdvance, After moves the clock itself, so code that sleeps inside one
// pass runs without a driver.
type FakeClock struct {
	mu          sync.Mutex
	now         time.Time
	timers      []fakeTimer
	autoAdvance bool
	waiters     []chan struct{}
}

type fakeTimer struct {
	at time.Time
	ch chan time.Time
}

// NewFakeClock starts a fake clock at t.
func NewFakeClock(t time.Time) *FakeClock { return &FakeClock{now: t} }

// SetAutoAdvance makes every After advance the clock by its duration.
func (c *FakeClock) SetAutoAdvance(on bool) {
	c.mu.Lock()
	c.autoAdvance = on
	c.mu.Unlock()
}

func (c *FakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *FakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	ch := make(chan time.Time, 1)
	if c.autoAdvance {
		c.now = c.now.Add(max(d, 0))
		c.mu.Unlock()
		ch <- c.Now()
		c.Advance(0)
		return ch
	}
	if d <= 0 {
		ch <- c.now
		c.mu.Unlock()
		return ch
	}
	c.timers = append(c.timers, fakeTimer{at: c.now.Add(d), ch: ch})
	for _, w := range c.waiters {
		close(w)
	}
	c.waiters = nil
	c.mu.Unlock()
	return ch
}

// Advance moves the clock by d and fires every timer that became due.
func (c *FakeClock) Advance(d time.Duration) {
	c.Set(c.Now().Add(d))
}

// Set moves the clock to t (never backwards for timers) and fires due timers.
func (c *FakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.now = t
	var due []fakeTimer
	kept := c.timers[:0]
	for _, tm := range c.timers {
		if !tm.at.After(t) {
			due = append(due, tm)
		} else {
			kept = append(kept, tm)
		}
	}
	c.timers = kept
	c.mu.Unlock()
	sort.Slice(due, func(i, j int) bool { return due[i].at.Before(due[j].at) })
	for _, tm := range due {
		tm.ch <- t
	}
}

// Pending returns how many timers wait.
func (c *FakeClock) Pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.timers)
}

// NextTimer returns when the earliest pending timer fires.
func (c *FakeClock) NextTimer() (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var first time.Time
	for _, tm := range c.timers {
		if first.IsZero() || tm.at.Before(first) {
			first = tm.at
		}
	}
	return first, !first.IsZero()
}

// WaitForTimers blocks until at least n timers are pending or ctx ends; a
// test uses it to know the code under test is asleep before advancing.
func (c *FakeClock) WaitForTimers(ctx context.Context, n int) error {
	for {
		c.mu.Lock()
		if len(c.timers) >= n {
			c.mu.Unlock()
			return nil
		}
		w := make(chan struct{})
		c.waiters = append(c.waiters, w)
		c.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-w:
		}
	}
}
