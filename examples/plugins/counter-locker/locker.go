package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/offpeak/offpeak/plugins"
)

type config struct {
	URL string `json:"url"` // base URL of the slot service
}

// locker forwards every call to the slot service as POST <url>/v1/<method>.
type locker struct {
	log    *slog.Logger
	client *http.Client

	mu   sync.Mutex
	base string
}

func newLocker(log *slog.Logger) *locker {
	return &locker{log: log, client: &http.Client{}}
}

func (l *locker) Configure(_ context.Context, raw json.RawMessage) error {
	var c config
	if err := plugins.DecodeConfig(raw, &c); err != nil {
		return err
	}
	u, err := url.Parse(c.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%w: url must be an http(s) URL, not %q", plugins.ErrInvalidArgument, c.URL)
	}
	l.mu.Lock()
	l.base = strings.TrimRight(c.URL, "/")
	l.mu.Unlock()
	return nil
}

// errorKinds maps the service's error kinds to the SDK's sentinels.
var errorKinds = map[string]error{
	"not_holder":        plugins.ErrNotHolder,
	"frozen":            plugins.ErrFrozen,
	"conflict":          plugins.ErrConflict,
	"invalid_argument":  plugins.ErrInvalidArgument,
	"node_id_collision": plugins.ErrNodeIDCollision,
}

type apiError struct {
	Error string `json:"error"`
	Kind  string `json:"kind"`
}

func (l *locker) call(ctx context.Context, method string, in, out any) error {
	l.mu.Lock()
	base := l.base
	l.mu.Unlock()
	if base == "" {
		return fmt.Errorf("%w: not configured: set url in [lock.config]", plugins.ErrInvalidArgument)
	}
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/"+method, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := l.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("counter-locker: %w: %v", plugins.ErrUnavailable, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("counter-locker: %w: reading answer: %v", plugins.ErrUnavailable, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e apiError
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			return fmt.Errorf("counter-locker: %w: %s from %s", plugins.ErrUnavailable, resp.Status, base)
		}
		if s, ok := errorKinds[e.Kind]; ok {
			return fmt.Errorf("counter-locker: %s: %w", e.Error, s)
		}
		return errors.New("counter-locker: " + e.Error)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("counter-locker: bad answer to %s: %w", method, err)
	}
	return nil
}

type groupReq struct {
	Group    string `json:"group"`
	Revision uint64 `json:"revision,omitempty"`
	Slots    int    `json:"slots,omitempty"`
}

func (l *locker) Acquire(ctx context.Context, req plugins.AcquireRequest) (res plugins.AcquireResult, err error) {
	err = l.call(ctx, "acquire", req, &res)
	if err == nil && res.Granted {
		l.log.Info("slot granted", "group", req.Group, "id", req.Holder.ID)
	}
	return res, err
}

func (l *locker) Release(ctx context.Context, req plugins.ReleaseRequest) error {
	return l.call(ctx, "release", req, &struct{}{})
}

func (l *locker) Status(ctx context.Context, group string) (st plugins.LockState, err error) {
	return st, l.call(ctx, "status", groupReq{Group: group}, &st)
}

func (l *locker) Wait(ctx context.Context, group string, revision uint64) (st plugins.LockState, err error) {
	return st, l.call(ctx, "wait", groupReq{Group: group, Revision: revision}, &st)
}

func (l *locker) SetSlots(ctx context.Context, group string, slots int) (st plugins.LockState, err error) {
	return st, l.call(ctx, "set_slots", groupReq{Group: group, Slots: slots}, &st)
}

func (l *locker) Freeze(ctx context.Context, req plugins.FreezeRequest) error {
	return l.call(ctx, "freeze", req, &struct{}{})
}

func (l *locker) Thaw(ctx context.Context, group string) error {
	return l.call(ctx, "thaw", groupReq{Group: group}, &struct{}{})
}
