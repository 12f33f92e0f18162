package sdnotify

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/offpeak/offpeak/scheduler"
)

// listen binds a unixgram socket as systemd would and points NOTIFY_SOCKET
// at it; the returned channel yields each datagram.
func listen(t *testing.T) <-chan string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	ch := make(chan string, 64)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(ch)
				return
			}
			ch <- string(buf[:n])
		}
	}()
	return ch
}

func next(t *testing.T, ch <-chan string) string {
	t.Helper()
	select {
	case m, ok := <-ch:
		if !ok {
			t.Fatal("notify socket closed")
		}
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no datagram on the notify socket within 10s")
	}
	return ""
}

func TestReadyStatusStopping(t *testing.T) {
	ch := listen(t)
	n := New(Options{})
	n.Ready("agent started")
	if got, want := next(t, ch), "READY=1\nSTATUS=agent started"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	tests := []struct {
		r    scheduler.Result
		want string
	}{
		{scheduler.Result{Decision: scheduler.DecisionWaitWindow, Reason: "next window opens at 2026-06-02T02:00:00Z"}, "STATUS=wait-window: next window opens at 2026-06-02T02:00:00Z"},
		{scheduler.Result{Decision: scheduler.DecisionWaitSlot, Reason: "1/1 slots held\nby node-b"}, "STATUS=wait-slot: 1/1 slots held by node-b"},
		{scheduler.Result{Decision: scheduler.DecisionReboot, Reason: "would reboot now", DryRun: true}, "STATUS=reboot: would reboot now [dry run]"},
	}
	for _, tt := range tests {
		t.Run(string(tt.r.Decision), func(t *testing.T) {
			n.Observe(tt.r)
			if got := next(t, ch); got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
	n.Stopping()
	if got := next(t, ch); !strings.HasPrefix(got, "STOPPING=1\n") {
		t.Fatalf("got %q, want STOPPING=1", got)
	}
}

type fakeTicker struct {
	c       chan time.Time
	stopped chan struct{}
}

func (f *fakeTicker) C() <-chan time.Time { return f.c }
func (f *fakeTicker) Stop()               { close(f.stopped) }

func TestWatchdogPingsAtHalfTheTimeout(t *testing.T) {
	ch := listen(t)
	t.Setenv("WATCHDOG_USEC", "60000000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	ft := &fakeTicker{c: make(chan time.Time), stopped: make(chan struct{})}
	interval := make(chan time.Duration, 1)
	n := New(Options{NewTicker: func(d time.Duration) Ticker { interval <- d; return ft }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Watchdog(ctx) }()

	if d := <-interval; d != 30*time.Second {
		t.Fatalf("ticker interval %s, want 30s (half of WATCHDOG_USEC)", d)
	}
	// One ping at start, then one per tick.
	const ticks = 3
	if got := next(t, ch); got != "WATCHDOG=1" {
		t.Fatalf("first datagram %q, want WATCHDOG=1", got)
	}
	for i := range ticks {
		ft.c <- time.Now()
		if got := next(t, ch); got != "WATCHDOG=1" {
			t.Fatalf("tick %d: got %q, want WATCHDOG=1", i, got)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	<-ft.stopped
	select {
	case m := <-ch:
		t.Fatalf("datagram %q after the watchdog stopped", m)
	default:
	}
}

func TestWatchdogOff(t *testing.T) {
	tests := []struct {
		name, usec, pid string
	}{
		{"no WATCHDOG_USEC", "", ""},
		{"another process is watched", "1000000", strconv.Itoa(os.Getpid() + 1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("WATCHDOG_USEC", tt.usec)
			t.Setenv("WATCHDOG_PID", tt.pid)
			n := New(Options{NewTicker: func(time.Duration) Ticker {
				t.Error("ticker started although the watchdog is off")
				return &fakeTicker{c: make(chan time.Time), stopped: make(chan struct{})}
			}})
			// Returns at once: the context is never cancelled.
			if err := n.Watchdog(context.Background()); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// Notifications are best effort: without a socket nothing happens, and a
// socket that went away costs a warning, not the agent.
func TestSendFailuresAreOnlyLogged(t *testing.T) {
	tests := []struct {
		name, socket string
		wantWarn     bool
	}{
		{"no NOTIFY_SOCKET", "", false},
		{"socket gone", filepath.Join(t.TempDir(), "gone.sock"), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("NOTIFY_SOCKET", tt.socket)
			var logs bytes.Buffer
			n := New(Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			n.Ready("x")
			n.Observe(scheduler.Result{Decision: scheduler.DecisionIdle})
			n.Stopping()
			if got := strings.Count(logs.String(), "sd_notify failed"); (got == 3) != tt.wantWarn || (got != 0) != tt.wantWarn {
				t.Fatalf("%d warnings, want them=%v:\n%s", got, tt.wantWarn, logs.String())
			}
		})
	}
}
