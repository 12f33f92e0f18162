package reboot_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/offpeak/offpeak/internal/dbustest"
	"github.com/offpeak/offpeak/internal/logind"
	"github.com/offpeak/offpeak/internal/logind/logindtest"
	"github.com/offpeak/offpeak/internal/reboot"
)

type call struct {
	argv  []string
	stdin string
}

// recRunner records commands instead of running them.
type recRunner struct {
	mu    sync.Mutex
	calls []call
	err   map[string]error // by argv[0]
}

func (r *recRunner) Run(_ context.Context, argv []string, stdin []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, call{argv: append([]string(nil), argv...), stdin: string(stdin)})
	return r.err[argv[0]]
}

func (r *recRunner) argvs() [][]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out [][]string
	for _, c := range r.calls {
		out = append(out, c.argv)
	}
	return out
}

// stepClock hands every timer request to the test, which fires it when it
// wants; After blocks until the test has taken the request, so the test
// always knows where the code under test is waiting.
type stepClock struct{ reqs chan timer }

type timer struct {
	d  time.Duration
	ch chan time.Time
}

func newStepClock() *stepClock { return &stepClock{reqs: make(chan timer)} }

func (c *stepClock) After(d time.Duration) <-chan time.Time {
	t := timer{d: d, ch: make(chan time.Time, 1)}
	c.reqs <- t
	return t.ch
}

func (c *stepClock) expect(t *testing.T, ctx context.Context, d time.Duration) timer {
	t.Helper()
	select {
	case tm := <-c.reqs:
		if tm.d != d {
			t.Fatalf("timer for %s requested, want %s", tm.d, d)
		}
		return tm
	case <-ctx.Done():
		t.Fatalf("no timer for %s requested: %v", d, ctx.Err())
	}
	return timer{}
}

func (tm timer) fire() { tm.ch <- time.Time{} }

// noClock fails the test if any timer is requested.
type noClock struct{ t *testing.T }

func (c noClock) After(d time.Duration) <-chan time.Time {
	c.t.Errorf("unexpected timer for %s", d)
	return make(chan time.Time)
}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func setup(t *testing.T) (*logindtest.Server, *logind.Client) {
	t.Helper()
	d := dbustest.New(t)
	srv := logindtest.Start(t, d)
	return srv, logind.New(d.Conn(t))
}

func TestRebootCallsLogindOnceNonInteractive(t *testing.T) {
	srv, c := setup(t)
	run := &recRunner{}
	r := &reboot.Rebooter{Logind: c, Runner: run, Clock: noClock{t}}
	if err := r.Reboot(testCtx(t)); err != nil {
		t.Fatalf("Reboot: %v", err)
	}
	if got := srv.RebootCalls(); !reflect.DeepEqual(got, []bool{false}) {
		t.Fatalf("logind Reboot calls = %v, want exactly [false]", got)
	}
	if got := run.argvs(); len(got) != 0 {
		t.Fatalf("commands run = %v, want none", got)
	}
}

func TestRebootSurfacesLogindRefusal(t *testing.T) {
	srv, c := setup(t)
	srv.SetRebootError(logind.ErrNameAccessDenied, "Interactive authentication required.")
	run := &recRunner{}
	r := &reboot.Rebooter{Logind: c, Runner: run, Clock: noClock{t}}
	err := r.Reboot(testCtx(t))
	if err == nil {
		t.Fatal("Reboot succeeded although logind refused")
	}
	if got := logind.ErrorName(err); got != logind.ErrNameAccessDenied {
		t.Fatalf("error %v does not carry %s", err, logind.ErrNameAccessDenied)
	}
	if got := run.argvs(); len(got) != 0 {
		t.Fatalf("a refusal must not fall back to systemctl; ran %v", got)
	}
}

func TestRebootFallsBackToSystemctlWhenLogindAbsent(t *testing.T) {
	d := dbustest.New(t) // no logind on this bus
	run := &recRunner{}
	r := &reboot.Rebooter{Logind: logind.New(d.Conn(t)), Runner: run, Clock: noClock{t}}
	if err := r.Reboot(testCtx(t)); err != nil {
		t.Fatalf("Reboot: %v", err)
	}
	if got, want := run.argvs(), [][]string{{"systemctl", "reboot"}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("commands = %v, want %v", got, want)
	}
}

func TestRebootWithoutLogindClientUsesSystemctl(t *testing.T) {
	run := &recRunner{}
	r := &reboot.Rebooter{Runner: run, Clock: noClock{t}}
	if err := r.Reboot(testCtx(t)); err != nil {
		t.Fatalf("Reboot: %v", err)
	}
	if got, want := run.argvs(), [][]string{{"systemctl", "reboot"}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("commands = %v, want %v", got, want)
	}
}

func TestRebootReportsFailedSystemctl(t *testing.T) {
	run := &recRunner{err: map[string]error{"systemctl": errors.New("exit status 1")}}
	r := &reboot.Rebooter{Runner: run, Clock: noClock{t}}
	if err := r.Reboot(testCtx(t)); err == nil || !strings.Contains(err.Error(), "systemctl reboot") {
		t.Fatalf("Reboot = %v, want an error naming systemctl reboot", err)
	}
}

func TestDryRunCallsNothing(t *testing.T) {
	srv, c := setup(t)
	srv.SetInhibitors([]logind.Inhibitor{{What: "shutdown", Who: "x", Why: "y", Mode: "block"}})
	run := &recRunner{}
	var logs bytes.Buffer
	r := &reboot.Rebooter{
		Logind: c, Runner: run, Clock: noClock{t}, DryRun: true,
		WarnUsers: true, Delay: 5 * time.Minute,
		Log: slog.New(slog.NewTextHandler(&logs, nil)),
	}
	if err := r.Reboot(testCtx(t)); err != nil {
		t.Fatalf("dry-run Reboot: %v", err)
	}
	if got := srv.RebootCalls(); len(got) != 0 {
		t.Fatalf("dry run called logind Reboot %v", got)
	}
	if got := run.argvs(); len(got) != 0 {
		t.Fatalf("dry run ran %v", got)
	}
	if !strings.Contains(logs.String(), "would reboot") {
		t.Fatalf("dry run did not log \"would reboot\": %q", logs.String())
	}
}

func TestBlockInhibitorDelaysRebootUntilReleased(t *testing.T) {
	srv, c := setup(t)
	srv.SetInhibitors([]logind.Inhibitor{
		{What: "shutdown:sleep", Who: "backup", Why: "nightly dump", Mode: "block", PID: 10},
		{What: "sleep", Who: "NetworkManager", Why: "suspend", Mode: "block", PID: 11},
	})
	clk := newStepClock()
	ctx := testCtx(t)
	r := &reboot.Rebooter{
		Logind: c, Runner: &recRunner{}, Clock: clk,
		InhibitorMaxWait: time.Hour, InhibitorPoll: time.Minute,
	}
	done := make(chan error, 1)
	go func() { done <- r.Reboot(ctx) }()

	clk.expect(t, ctx, time.Hour) // the overall deadline
	poll := clk.expect(t, ctx, time.Minute)
	if got := srv.RebootCalls(); len(got) != 0 {
		t.Fatalf("rebooted while a block inhibitor is held: %v", got)
	}
	srv.SetInhibitors(nil)
	poll.fire()

	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Reboot: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("Reboot did not return after the inhibitor was released")
	}
	if got := srv.RebootCalls(); !reflect.DeepEqual(got, []bool{false}) {
		t.Fatalf("logind Reboot calls = %v, want [false]", got)
	}
}

func TestInhibitorStillHeldAtDeadlineIsErrInhibited(t *testing.T) {
	srv, c := setup(t)
	srv.SetInhibitors([]logind.Inhibitor{{What: "shutdown", Who: "backup", Why: "nightly dump", Mode: "block"}})
	clk := newStepClock()
	ctx := testCtx(t)
	r := &reboot.Rebooter{Logind: c, Runner: &recRunner{}, Clock: clk, InhibitorMaxWait: time.Hour, InhibitorPoll: time.Minute}
	done := make(chan error, 1)
	go func() { done <- r.Reboot(ctx) }()

	deadline := clk.expect(t, ctx, time.Hour)
	clk.expect(t, ctx, time.Minute) // first poll, never fired
	deadline.fire()

	err := <-done
	if !errors.Is(err, reboot.ErrInhibited) {
		t.Fatalf("Reboot = %v, want ErrInhibited", err)
	}
	if got, want := err.Error(), "blocked by inhibitor: backup: nightly dump"; got != want {
		t.Fatalf("error text = %q, want %q", got, want)
	}
	var ie *reboot.InhibitedError
	if !errors.As(err, &ie) || len(ie.Inhibitors) != 1 || ie.Inhibitors[0].Who != "backup" {
		t.Fatalf("error does not carry the inhibitor: %#v", err)
	}
	if got := srv.RebootCalls(); len(got) != 0 {
		t.Fatalf("rebooted despite the inhibitor: %v", got)
	}
}

func TestWaitInhibitorsIgnoresNonBlockingLocks(t *testing.T) {
	tests := []struct {
		name string
		list []logind.Inhibitor
		want bool // blocked
	}{
		{"none", nil, false},
		{"delay on shutdown", []logind.Inhibitor{{What: "shutdown", Who: "a", Why: "b", Mode: "delay"}}, false},
		{"block on sleep", []logind.Inhibitor{{What: "sleep:idle", Who: "a", Why: "b", Mode: "block"}}, false},
		{"block-weak on shutdown", []logind.Inhibitor{{What: "shutdown", Who: "a", Why: "b", Mode: "block-weak"}}, false},
		{"block on shutdown", []logind.Inhibitor{{What: "shutdown", Who: "a", Why: "b", Mode: "block"}}, true},
		{"block on sleep:shutdown", []logind.Inhibitor{{What: "sleep:shutdown", Who: "a", Why: "b", Mode: "block"}}, true},
	}
	srv, c := setup(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv.SetInhibitors(tt.list)
			r := &reboot.Rebooter{Logind: c, Clock: noClock{t}}
			err := r.WaitInhibitors(testCtx(t), 0, nil) // check once
			if got := errors.Is(err, reboot.ErrInhibited); got != tt.want {
				t.Fatalf("WaitInhibitors = %v, blocked %v, want %v", err, got, tt.want)
			}
		})
	}
}

func TestBroadcastThenDelayThenReboot(t *testing.T) {
	srv, c := setup(t)
	run := &recRunner{}
	clk := newStepClock()
	ctx := testCtx(t)
	r := &reboot.Rebooter{
		Logind: c, Runner: run, Clock: clk,
		WarnUsers: true, Message: "maintenance reboot", Delay: 5 * time.Minute,
	}
	done := make(chan error, 1)
	go func() { done <- r.Reboot(ctx) }()

	delay := clk.expect(t, ctx, 5*time.Minute)
	run.mu.Lock()
	calls := append([]call(nil), run.calls...)
	run.mu.Unlock()
	if len(calls) != 1 || !reflect.DeepEqual(calls[0].argv, []string{"wall"}) || calls[0].stdin != "maintenance reboot\n" {
		t.Fatalf("before the delay: commands %+v, want wall with the message on stdin", calls)
	}
	if got := srv.RebootCalls(); len(got) != 0 {
		t.Fatalf("rebooted before the delay elapsed: %v", got)
	}
	delay.fire()
	if err := <-done; err != nil {
		t.Fatalf("Reboot: %v", err)
	}
	if got := srv.RebootCalls(); !reflect.DeepEqual(got, []bool{false}) {
		t.Fatalf("logind Reboot calls = %v, want [false]", got)
	}
}

func TestDefaultBroadcastMessageNamesDelay(t *testing.T) {
	run := &recRunner{}
	clk := newStepClock()
	ctx := testCtx(t)
	r := &reboot.Rebooter{Runner: run, Clock: clk, WarnUsers: true, Delay: 5 * time.Minute}
	done := make(chan error, 1)
	go func() { done <- r.Reboot(ctx) }()
	clk.expect(t, ctx, 5*time.Minute).fire()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	run.mu.Lock()
	defer run.mu.Unlock()
	if len(run.calls) == 0 || !strings.Contains(run.calls[0].stdin, "5m0s") {
		t.Fatalf("broadcast %+v does not name the delay", run.calls)
	}
}

func TestFailedBroadcastDoesNotStopReboot(t *testing.T) {
	srv, c := setup(t)
	run := &recRunner{err: map[string]error{"wall": errors.New("wall: not found")}}
	r := &reboot.Rebooter{Logind: c, Runner: run, Clock: noClock{t}, WarnUsers: true}
	if err := r.Reboot(testCtx(t)); err != nil {
		t.Fatalf("Reboot: %v", err)
	}
	if got := srv.RebootCalls(); !reflect.DeepEqual(got, []bool{false}) {
		t.Fatalf("logind Reboot calls = %v, want [false]", got)
	}
}

func TestCancelDuringDelayDoesNotReboot(t *testing.T) {
	srv, c := setup(t)
	clk := newStepClock()
	ctx, cancel := context.WithCancel(testCtx(t))
	r := &reboot.Rebooter{Logind: c, Runner: &recRunner{}, Clock: clk, Delay: time.Minute}
	done := make(chan error, 1)
	go func() { done <- r.Reboot(ctx) }()
	clk.expect(t, testCtx(t), time.Minute)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Reboot after cancel = %v, want context.Canceled", err)
	}
	if got := srv.RebootCalls(); len(got) != 0 {
		t.Fatalf("rebooted after cancel: %v", got)
	}
}

func TestHoldShutdownDelayTakesAndReleasesDelayLock(t *testing.T) {
	srv, c := setup(t)
	ctx := testCtx(t)
	r := &reboot.Rebooter{Logind: c}
	release, err := r.HoldShutdownDelay(ctx, "writing state")
	if err != nil {
		t.Fatal(err)
	}
	held := srv.Held()
	want := []logind.Inhibitor{{What: "shutdown", Who: reboot.Who, Why: "writing state", Mode: "delay"}}
	for i := range held {
		held[i].UID, held[i].PID = 0, 0
	}
	if !reflect.DeepEqual(held, want) {
		t.Fatalf("held = %+v, want %+v", held, want)
	}
	// Our own delay lock must not block our own reboot.
	if err := r.WaitInhibitors(ctx, 0, nil); err != nil {
		t.Fatalf("own delay inhibitor blocks: %v", err)
	}
	if err := release(); err != nil {
		t.Fatal(err)
	}
	if err := srv.WaitReleased(ctx, reboot.Who); err != nil {
		t.Fatal(err)
	}
}

func TestHoldShutdownDelayWithoutLogindIsNoop(t *testing.T) {
	d := dbustest.New(t)
	for name, r := range map[string]*reboot.Rebooter{
		"nil client":     {},
		"logind missing": {Logind: logind.New(d.Conn(t))},
	} {
		t.Run(name, func(t *testing.T) {
			release, err := r.HoldShutdownDelay(testCtx(t), "x")
			if err != nil {
				t.Fatalf("HoldShutdownDelay: %v", err)
			}
			if err := release(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestExecRunner(t *testing.T) {
	tests := []struct {
		name    string
		argv    []string
		wantErr bool
	}{
		{"success", []string{"true"}, false},
		{"failure", []string{"false"}, true},
		{"missing binary", []string{"/nonexistent/offpeak-test-binary"}, true},
		{"empty argv", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := reboot.ExecRunner{}.Run(testCtx(t), tt.argv, []byte("msg\n"))
			if (err != nil) != tt.wantErr {
				t.Fatalf("Run(%v) = %v, wantErr %v", tt.argv, err, tt.wantErr)
			}
		})
	}
}

// The scheduler consumes the Rebooter through these three methods.
var _ interface {
	Reboot(ctx context.Context) error
	Broadcast(ctx context.Context, message string) error
	WaitInhibitors(ctx context.Context, max time.Duration, waiting func(string)) error
} = (*reboot.Rebooter)(nil)

func TestBroadcastRunsWallWithMessageOnStdin(t *testing.T) {
	run := &recRunner{}
	r := &reboot.Rebooter{Runner: run}
	if err := r.Broadcast(testCtx(t), "-n reboot at 02:00"); err != nil {
		t.Fatal(err)
	}
	want := []call{{argv: []string{"wall"}, stdin: "-n reboot at 02:00\n"}}
	if !reflect.DeepEqual(run.calls, want) {
		t.Fatalf("calls = %+v, want %+v", run.calls, want)
	}
	run.err = map[string]error{"wall": errors.New("exit status 1")}
	if err := r.Broadcast(testCtx(t), "x"); err == nil {
		t.Fatal("failed wall returned nil")
	}
}
