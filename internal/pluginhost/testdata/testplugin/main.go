// Command testplugin is the plugin the pluginhost tests run. One binary
// covers every case: what it does at start-up depends on the name it is
// run under (offpeak-plugin-<mode>) or, run as `plugin serve KIND NAME`, it
// stands in for the offpeak binary serving a built-in. Per call, the group
// (locker) or check name selects a fault.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-plugin"

	"github.com/offpeak/offpeak/lockers/memlocker"
	"github.com/offpeak/offpeak/plugins"
)

func main() {
	if dir := os.Getenv("TESTPLUGIN_PIDDIR"); dir != "" {
		_ = os.WriteFile(filepath.Join(dir, strconv.Itoa(os.Getpid())), nil, 0o644)
	}
	log := plugins.NewLogger(os.Stderr, slog.LevelDebug)
	if len(os.Args) == 5 && os.Args[1] == "plugin" && os.Args[2] == "serve" {
		opts := plugins.ServeOpts{Name: os.Args[4], Version: "builtin-test"}
		switch os.Args[3] {
		case "locker":
			opts.Locker = newLocker(log)
		case "check":
			opts.HealthCheck = &check{log: log}
		default:
			fmt.Fprintln(os.Stderr, "unknown kind", os.Args[3])
			os.Exit(2)
		}
		serve(opts)
		return
	}
	mode := strings.TrimPrefix(filepath.Base(os.Args[0]), "offpeak-plugin-")
	opts := plugins.ServeOpts{Name: mode, Version: "1.2.3", Locker: newLocker(log), HealthCheck: &check{log: log}}
	switch mode {
	case "noisy":
		fmt.Println("hello from a plugin that talks too much")
	case "exit":
		fmt.Fprintln(os.Stderr, "refusing to start")
		os.Exit(3)
	case "checkonly":
		opts.Locker = nil
	case "proto2":
		// Speaks a protocol version offpeak does not.
		plugin.Serve(&plugin.ServeConfig{
			HandshakeConfig: plugin.HandshakeConfig{
				ProtocolVersion:  2,
				MagicCookieKey:   plugins.MagicCookieKey,
				MagicCookieValue: plugins.MagicCookieValue,
			},
			VersionedPlugins: map[int]plugin.PluginSet{2: {}},
			GRPCServer:       plugin.DefaultGRPCServer,
		})
		return
	}
	serve(opts)
}

func serve(opts plugins.ServeOpts) {
	if err := plugins.Serve(opts); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// fault acts out the fault named by key, if any; ok=false means none.
func fault(ctx context.Context, key string) (handled bool, err error) {
	switch key {
	case "crash":
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		<-ctx.Done()
		return true, ctx.Err()
	case "hang":
		// Ignores its deadline on purpose.
		<-make(chan struct{})
	case "slow":
		select {
		case <-time.After(time.Minute):
		case <-ctx.Done():
		}
		return true, fmt.Errorf("testplugin: gave up: %w", ctx.Err())
	}
	kind, ok := strings.CutPrefix(key, "err-")
	if !ok {
		return false, nil
	}
	sentinels := map[string]error{
		"notholder":   plugins.ErrNotHolder,
		"frozen":      plugins.ErrFrozen,
		"conflict":    plugins.ErrConflict,
		"unavailable": plugins.ErrUnavailable,
		"invalid":     plugins.ErrInvalidArgument,
	}
	if s, ok := sentinels[kind]; ok {
		return true, fmt.Errorf("testplugin says %s: %w", kind, s)
	}
	return true, errors.New("testplugin: plain failure")
}

// newLocker is the plugin's locker: the in-memory one without a clock, so
// a holder comes back exactly as the host sent it (no AcquiredAt stamped),
// which is what the host's tests check of the wire.
func newLocker(log *slog.Logger) *locker {
	mem := memlocker.New()
	mem.Now = func() time.Time { return time.Time{} }
	return &locker{mem: mem, log: log}
}

type locker struct {
	mem *memlocker.Locker
	log *slog.Logger

	mu    sync.Mutex
	label string // from the config; Status("config") shows it
}

func (l *locker) Configure(_ context.Context, config json.RawMessage) error {
	var c struct {
		Label string `json:"label"`
	}
	if err := plugins.DecodeConfig(config, &c); err != nil {
		return fmt.Errorf("testplugin: %w", err)
	}
	l.mu.Lock()
	l.label = c.Label
	l.mu.Unlock()
	return nil
}

func (l *locker) Acquire(ctx context.Context, req plugins.AcquireRequest) (plugins.AcquireResult, error) {
	if ok, err := fault(ctx, req.Group); ok {
		return plugins.AcquireResult{}, err
	}
	if req.Group == "garbage-grant" {
		// Claims a grant without listing the holder.
		return plugins.AcquireResult{Granted: true, State: plugins.LockState{Group: req.Group, Slots: 1}}, nil
	}
	res, err := l.mem.Acquire(ctx, req)
	if err == nil && !res.Granted && res.State.Frozen {
		// The host's tests check that ErrFrozen crosses the wire, so this
		// plugin refuses with it where a locker may also answer "not
		// granted, frozen".
		return plugins.AcquireResult{}, fmt.Errorf("testplugin: group %q: %w", req.Group, plugins.ErrFrozen)
	}
	return res, err
}

func (l *locker) Release(ctx context.Context, req plugins.ReleaseRequest) error {
	if ok, err := fault(ctx, req.Group); ok {
		return err
	}
	return l.mem.Release(ctx, req)
}

func (l *locker) Status(ctx context.Context, group string) (plugins.LockState, error) {
	if ok, err := fault(ctx, group); ok {
		return plugins.LockState{}, err
	}
	switch group {
	case "garbage-slots":
		return plugins.LockState{Group: group, Slots: -3}, nil
	case "garbage-group":
		return plugins.LockState{Group: "someone-else", Slots: 1}, nil
	case "garbage-holders":
		h := plugins.Holder{ID: "a"}
		return plugins.LockState{Group: group, Slots: 2, Holders: []plugins.Holder{h, h}}, nil
	case "config":
		l.mu.Lock()
		defer l.mu.Unlock()
		return plugins.LockState{Group: group, FrozenReason: l.label}, nil
	case "log":
		l.log.Warn("status asked", "group", group)
		fmt.Fprintln(os.Stderr, "raw line on stderr")
	}
	return l.mem.Status(ctx, group)
}

func (l *locker) Wait(ctx context.Context, group string, revision uint64) (plugins.LockState, error) {
	if ok, err := fault(ctx, group); ok {
		return plugins.LockState{}, err
	}
	if group == "garbage-wait" {
		return plugins.LockState{Group: group, Slots: 1, Revision: revision}, nil
	}
	return l.mem.Wait(ctx, group, revision)
}

func (l *locker) SetSlots(ctx context.Context, group string, slots int) (plugins.LockState, error) {
	if ok, err := fault(ctx, group); ok {
		return plugins.LockState{}, err
	}
	return l.mem.SetSlots(ctx, group, slots)
}

func (l *locker) Freeze(ctx context.Context, req plugins.FreezeRequest) error {
	if ok, err := fault(ctx, req.Group); ok {
		return err
	}
	return l.mem.Freeze(ctx, req)
}

func (l *locker) Thaw(ctx context.Context, group string) error {
	if ok, err := fault(ctx, group); ok {
		return err
	}
	return l.mem.Thaw(ctx, group)
}

type check struct{ log *slog.Logger }

func (c *check) Check(ctx context.Context, req plugins.CheckRequest) (plugins.CheckResult, error) {
	if ok, err := fault(ctx, req.Name); ok {
		return plugins.CheckResult{}, err
	}
	now := time.Now()
	switch req.Name {
	case "garbage":
		return plugins.CheckResult{Outcome: "maybe", Reason: "cannot make up my mind", Time: now}, nil
	case "deadline":
		d := map[string]string{}
		if dl, ok := ctx.Deadline(); ok {
			d["deadline"] = dl.Format(time.RFC3339Nano)
		}
		return plugins.CheckResult{Outcome: plugins.Pass, Reason: "deadline", Details: d, Time: now}, nil
	case "fail":
		return plugins.CheckResult{Outcome: plugins.Fail, Reason: "node " + req.Node.ID + " is busy", Time: now}, nil
	}
	return plugins.CheckResult{
		Outcome: plugins.Pass,
		Reason:  "ok",
		Details: map[string]string{"phase": string(req.Phase), "config": string(req.Config)},
		Time:    now,
	}, nil
}
