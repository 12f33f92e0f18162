package updateengine_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"github.com/offpeak/offpeak/installer"
	"github.com/offpeak/offpeak/installer/updateengine"
	"github.com/offpeak/offpeak/internal/dbustest"
)

// engine is a scripted com.coreos.update1 service.
type engine struct {
	conn *dbus.Conn

	mu       sync.Mutex
	status   updateengine.Status
	attempts int
	lastRaw  int64
}

func (e *engine) GetStatus() (int64, float64, string, string, int64, *dbus.Error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.lastRaw, e.status.Progress, e.status.CurrentOperation, e.status.NewVersion, e.status.NewSize, nil
}

func (e *engine) AttemptUpdate() *dbus.Error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.attempts++
	return nil
}

// set changes the status and emits StatusUpdate like update_engine does.
func (e *engine) set(t *testing.T, op, version string, progress float64) {
	t.Helper()
	e.mu.Lock()
	e.status = updateengine.Status{CurrentOperation: op, NewVersion: version, Progress: progress, NewSize: 4096}
	last := e.lastRaw
	e.mu.Unlock()
	err := e.conn.Emit(updateengine.ObjectPath, updateengine.Interface+"."+updateengine.SignalMember,
		last, progress, op, version, int64(4096))
	if err != nil {
		t.Fatalf("emit: %v", err)
	}
}

func startEngine(t *testing.T, d *dbustest.Daemon, op, version string) *engine {
	t.Helper()
	e := &engine{status: updateengine.Status{CurrentOperation: op, NewVersion: version}, lastRaw: 1700000000}
	e.conn = d.Serve(t, updateengine.BusName, updateengine.ObjectPath, updateengine.Interface, e)
	return e
}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func writeFile(t *testing.T, root, name, content string) {
	t.Helper()
	p := filepath.Join(root, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func flatcarRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	writeFile(t, root, "usr/share/flatcar/release", "FLATCAR_RELEASE_VERSION=4081.2.0\nFLATCAR_RELEASE_BOARD=amd64-usr\nFLATCAR_RELEASE_APPID={e96281a6-d1af-4bde-9a0a-97b76e56dc57}\n")
	return root
}

func TestStatusReportsStagedUpdate(t *testing.T) {
	tests := []struct {
		op, version string
		progress    float64
		want        installer.Status
	}{
		{updateengine.OpUpdatedNeedReboot, "4152.2.1", 0, installer.Status{
			Backend: "update-engine", BootedVersion: "4081.2.0", Staged: true, StagedVersion: "4152.2.1",
			Detail: "update_engine: UPDATE_STATUS_UPDATED_NEED_REBOOT"}},
		{updateengine.OpIdle, "0.0.0", 0, installer.Status{
			Backend: "update-engine", BootedVersion: "4081.2.0", Detail: "update_engine: UPDATE_STATUS_IDLE"}},
		{updateengine.OpDownloading, "4152.2.1", 0.42, installer.Status{
			Backend: "update-engine", BootedVersion: "4081.2.0", Detail: "update_engine: UPDATE_STATUS_DOWNLOADING 42%"}},
		{updateengine.OpFinalizing, "4152.2.1", 0, installer.Status{
			Backend: "update-engine", BootedVersion: "4081.2.0", Detail: "update_engine: UPDATE_STATUS_FINALIZING"}},
		{updateengine.OpReportingErrorEvent, "0.0.0", 0, installer.Status{
			Backend: "update-engine", BootedVersion: "4081.2.0", Detail: "update_engine: UPDATE_STATUS_REPORTING_ERROR_EVENT"}},
	}
	d := dbustest.New(t)
	e := startEngine(t, d, updateengine.OpIdle, "0.0.0")
	b := &updateengine.Backend{Client: updateengine.NewClient(d.Conn(t)), Root: flatcarRoot(t)}
	for _, tt := range tests {
		t.Run(tt.op, func(t *testing.T) {
			e.set(t, tt.op, tt.version, tt.progress)
			got, err := b.Status(testCtx(t))
			if err != nil {
				t.Fatalf("Status: %v", err)
			}
			if got != tt.want {
				t.Fatalf("Status =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

func TestStatusUnknownOperationIsErrUnknown(t *testing.T) {
	d := dbustest.New(t)
	startEngine(t, d, "UPDATE_STATUS_SOMETHING_NEW", "1.2.3")
	b := &updateengine.Backend{Client: updateengine.NewClient(d.Conn(t))}
	_, err := b.Status(testCtx(t))
	if !errors.Is(err, installer.ErrUnknown) || !errors.Is(err, updateengine.ErrUnknownOperation) {
		t.Fatalf("Status = %v, want ErrUnknown wrapping ErrUnknownOperation", err)
	}
}

func TestStatusWithoutUpdateEngineIsErrUnknown(t *testing.T) {
	d := dbustest.New(t)
	b := &updateengine.Backend{Client: updateengine.NewClient(d.Conn(t))}
	if _, err := b.Status(testCtx(t)); !errors.Is(err, installer.ErrUnknown) {
		t.Fatalf("Status with no update_engine = %v, want ErrUnknown", err)
	}
}

// badEngine answers GetStatus with the wrong signature (an int32 where an
// int64 belongs, and a number for the operation).
type badEngine struct{}

func (badEngine) GetStatus() (int32, float64, uint32, string, int64, *dbus.Error) {
	return 1, 0, 7, "x", 0, nil
}

func TestStatusBadReplyIsErrUnknown(t *testing.T) {
	d := dbustest.New(t)
	d.Serve(t, updateengine.BusName, updateengine.ObjectPath, updateengine.Interface, badEngine{})
	b := &updateengine.Backend{Client: updateengine.NewClient(d.Conn(t))}
	_, err := b.Status(testCtx(t))
	if !errors.Is(err, installer.ErrUnknown) || !errors.Is(err, updateengine.ErrBadReply) {
		t.Fatalf("Status = %v, want ErrUnknown wrapping ErrBadReply", err)
	}
}

func TestStageCallsAttemptUpdate(t *testing.T) {
	d := dbustest.New(t)
	e := startEngine(t, d, updateengine.OpIdle, "0.0.0")
	b := &updateengine.Backend{Client: updateengine.NewClient(d.Conn(t))}
	if err := b.Stage(testCtx(t)); err != nil {
		t.Fatalf("Stage: %v", err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.attempts != 1 {
		t.Fatalf("AttemptUpdate called %d times, want 1", e.attempts)
	}
}

func recv(t *testing.T, ctx context.Context, ch <-chan installer.Status) installer.Status {
	t.Helper()
	select {
	case st, ok := <-ch:
		if !ok {
			t.Fatal("watch channel closed")
		}
		return st
	case <-ctx.Done():
		t.Fatalf("no status received: %v", ctx.Err())
	}
	return installer.Status{}
}

func TestWatchFollowsStatusSequence(t *testing.T) {
	d := dbustest.New(t)
	e := startEngine(t, d, updateengine.OpIdle, "0.0.0")
	b := &updateengine.Backend{Client: updateengine.NewClient(d.Conn(t)), Root: flatcarRoot(t)}
	ctx, cancel := context.WithCancel(testCtx(t))
	ch, err := b.Watch(ctx)
	if err != nil {
		t.Fatalf("Watch: %v", err)
	}
	if st := recv(t, ctx, ch); st.Staged || st.Detail != "update_engine: UPDATE_STATUS_IDLE" {
		t.Fatalf("initial status = %+v, want idle", st)
	}
	steps := []struct {
		op     string
		staged bool
		detail string
	}{
		{updateengine.OpDownloading, false, "update_engine: UPDATE_STATUS_DOWNLOADING 50%"},
		{updateengine.OpUpdatedNeedReboot, true, "update_engine: UPDATE_STATUS_UPDATED_NEED_REBOOT"},
	}
	for _, s := range steps {
		e.set(t, s.op, "4152.2.1", 0.5)
		st := recv(t, ctx, ch)
		if st.Staged != s.staged || st.Detail != s.detail {
			t.Fatalf("after %s: status %+v, want staged=%v detail %q", s.op, st, s.staged, s.detail)
		}
		if s.staged && (st.StagedVersion != "4152.2.1" || st.BootedVersion != "4081.2.0") {
			t.Fatalf("staged status %+v lacks versions", st)
		}
	}
	cancel()
	for range ch {
	}
}

func TestWatchSlowReaderGetsLatestInOrder(t *testing.T) {
	d := dbustest.New(t)
	e := startEngine(t, d, updateengine.OpIdle, "0.0.0")
	c := updateengine.NewClient(d.Conn(t))
	ctx := testCtx(t)
	ch, err := c.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	script := []string{
		updateengine.OpCheckingForUpdate, updateengine.OpUpdateAvailable, updateengine.OpDownloading,
		updateengine.OpVerifying, updateengine.OpFinalizing, updateengine.OpUpdatedNeedReboot,
	}
	for _, op := range script {
		e.set(t, op, "4152.2.1", 1)
	}
	index := map[string]int{updateengine.OpIdle: -1}
	for i, op := range script {
		index[op] = i
	}
	prev := -2
	for {
		var st updateengine.Status
		select {
		case st = <-ch:
		case <-ctx.Done():
			t.Fatal("never saw UPDATED_NEED_REBOOT")
		}
		i, ok := index[st.CurrentOperation]
		if !ok || i <= prev {
			t.Fatalf("status %s out of order (after index %d)", st.CurrentOperation, prev)
		}
		prev = i
		if st.Staged() {
			return
		}
	}
}

// A StatusUpdate with a wrong body is skipped, not delivered as a status.
func TestWatchSkipsMalformedSignal(t *testing.T) {
	d := dbustest.New(t)
	e := startEngine(t, d, updateengine.OpIdle, "0.0.0")
	c := updateengine.NewClient(d.Conn(t))
	ctx := testCtx(t)
	ch, err := c.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st := <-ch; st.CurrentOperation != updateengine.OpIdle {
		t.Fatalf("initial = %+v", st)
	}
	if err := e.conn.Emit(updateengine.ObjectPath, updateengine.Interface+"."+updateengine.SignalMember, "garbage"); err != nil {
		t.Fatal(err)
	}
	e.set(t, updateengine.OpUpdatedNeedReboot, "4152.2.1", 0)
	select {
	case st := <-ch:
		if !st.Staged() {
			t.Fatalf("after malformed then valid signal got %+v, want staged", st)
		}
	case <-ctx.Done():
		t.Fatal("no status after a malformed signal")
	}
}

func TestWatchWithoutUpdateEngineFails(t *testing.T) {
	d := dbustest.New(t)
	c := updateengine.NewClient(d.Conn(t))
	if _, err := c.Watch(testCtx(t)); err == nil {
		t.Fatal("Watch with no update_engine succeeded")
	}
}

func TestWatchChannelClosesWithConnection(t *testing.T) {
	d := dbustest.New(t)
	startEngine(t, d, updateengine.OpIdle, "0.0.0")
	conn, err := dbustest.Connect(context.Background(), d.Addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	ch, err := updateengine.NewClient(conn).Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	<-ch
	conn.Close()
	select {
	case _, ok := <-ch:
		if ok {
			t.Fatal("received a status after the connection closed")
		}
	case <-ctx.Done():
		t.Fatal("watch channel not closed after the connection closed")
	}
}

type recRunner struct {
	mu    sync.Mutex
	calls [][]string
	err   error
}

func (r *recRunner) Run(_ context.Context, argv []string) ([]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, argv)
	return nil, r.err
}

func TestMarkGoodAndRollbackCommands(t *testing.T) {
	tests := []struct {
		name     string
		b        updateengine.Backend
		op       func(b *updateengine.Backend, ctx context.Context) error
		wantRun  [][]string
		wantErr  error
		runError error
	}{
		{"mark good default", updateengine.Backend{}, (*updateengine.Backend).MarkGood,
			[][]string{{"/usr/sbin/flatcar-setgoodroot"}}, nil, nil},
		{"mark good custom", updateengine.Backend{MarkGoodCommand: []string{"/opt/bin/mark", "--now"}}, (*updateengine.Backend).MarkGood,
			[][]string{{"/opt/bin/mark", "--now"}}, nil, nil},
		{"mark good disabled", updateengine.Backend{NoMarkGood: true}, (*updateengine.Backend).MarkGood,
			nil, nil, nil},
		{"mark good fails", updateengine.Backend{}, (*updateengine.Backend).MarkGood,
			[][]string{{"/usr/sbin/flatcar-setgoodroot"}}, errRun, errRun},
		{"rollback unconfigured", updateengine.Backend{}, (*updateengine.Backend).Rollback,
			nil, installer.ErrNotSupported, nil},
		{"rollback configured", updateengine.Backend{RollbackCommand: []string{"/opt/bin/usr-rollback"}}, (*updateengine.Backend).Rollback,
			[][]string{{"/opt/bin/usr-rollback"}}, nil, nil},
	}
	d := dbustest.New(t)
	startEngine(t, d, updateengine.OpIdle, "0.0.0")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			run := &recRunner{err: tt.runError}
			b := tt.b
			b.Runner = run
			b.Client = updateengine.NewClient(d.Conn(t))
			err := tt.op(&b, testCtx(t))
			if tt.wantErr == nil && err != nil || tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if !reflect.DeepEqual(run.calls, tt.wantRun) {
				t.Fatalf("ran %v, want %v", run.calls, tt.wantRun)
			}
		})
	}
}

var errRun = errors.New("exit status 1")

func TestBootedVersion(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  string
	}{
		{"flatcar release", map[string]string{
			"usr/share/flatcar/release": "FLATCAR_RELEASE_VERSION=4081.2.0\n",
			"etc/os-release":            "VERSION=9.9.9\n",
		}, "4081.2.0"},
		{"os-release fallback", map[string]string{
			"etc/os-release": "NAME=\"Flatcar Container Linux by Kinvolk\"\nID=flatcar\nVERSION=\"3975.2.2\"\n",
		}, "3975.2.2"},
		{"usr lib os-release", map[string]string{
			"usr/lib/os-release": "VERSION='12 (bookworm)'\n",
		}, "12 (bookworm)"},
		{"nothing", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			for name, content := range tt.files {
				writeFile(t, root, name, content)
			}
			if got := updateengine.BootedVersion(root); got != tt.want {
				t.Fatalf("BootedVersion = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestParseEnvFile(t *testing.T) {
	in := "# comment\n\nID=flatcar\nNAME=\"Flatcar \\\"CL\\\"\"\nPRETTY='a b'\nbad line\n1X=no\nEMPTY=\nUNTERMINATED=\"x\n"
	want := map[string]string{"ID": "flatcar", "NAME": `Flatcar "CL"`, "PRETTY": "a b", "EMPTY": ""}
	if got := updateengine.ParseEnvFile([]byte(in)); !reflect.DeepEqual(got, want) {
		t.Fatalf("ParseEnvFile = %#v, want %#v", got, want)
	}
}

func FuzzParseEnvFile(f *testing.F) {
	f.Add([]byte("FLATCAR_RELEASE_VERSION=4081.2.0\n"))
	f.Add([]byte("NAME=\"a \\\\ b\"\nX='y'\n"))
	f.Add([]byte("=\n\"\n'\n\\"))
	f.Fuzz(func(t *testing.T, data []byte) {
		for k := range updateengine.ParseEnvFile(data) {
			if k == "" {
				t.Fatal("empty key")
			}
		}
	})
}

// TestRollbackRefusedWhileUpdateEngineWritesPassive: update_engine (as
// Flatcar ships it) does not mark the passive USR partition unbootable
// before it writes it, so the rollback command must not run while an
// update is being written or is staged but never booted: the partition it
// would make boot next holds unverified bytes. Only an idle update_engine
// lets it run; an unanswered status refuses too.
func TestRollbackRefusedWhileUpdateEngineWritesPassive(t *testing.T) {
	d := dbustest.New(t)
	e := startEngine(t, d, updateengine.OpIdle, "0.0.0")
	tests := []struct {
		op      string
		wantRun bool
	}{
		{updateengine.OpDownloading, false},
		{updateengine.OpVerifying, false},
		{updateengine.OpFinalizing, false},
		{updateengine.OpUpdatedNeedReboot, false},
		{updateengine.OpReportingErrorEvent, false},
		{updateengine.OpIdle, true},
	}
	for _, tt := range tests {
		t.Run(tt.op, func(t *testing.T) {
			e.set(t, tt.op, "4152.0.0", 0.5)
			run := &recRunner{}
			b := &updateengine.Backend{Client: updateengine.NewClient(d.Conn(t)), Runner: run, RollbackCommand: []string{"/opt/bin/usr-rollback"}}
			err := b.Rollback(testCtx(t))
			if tt.wantRun {
				if err != nil || len(run.calls) != 1 {
					t.Fatalf("Rollback = %v, ran %v", err, run.calls)
				}
				return
			}
			if !errors.Is(err, installer.ErrNoRollbackTarget) || len(run.calls) != 0 {
				t.Fatalf("Rollback = %v, ran %v; want a refusal and nothing run", err, run.calls)
			}
		})
	}
	t.Run("no answer", func(t *testing.T) {
		run := &recRunner{}
		b := &updateengine.Backend{Client: updateengine.NewClient(dbustest.New(t).Conn(t)), Runner: run, RollbackCommand: []string{"/opt/bin/usr-rollback"}}
		if err := b.Rollback(testCtx(t)); !errors.Is(err, installer.ErrNoRollbackTarget) || len(run.calls) != 0 {
			t.Fatalf("Rollback = %v, ran %v", err, run.calls)
		}
	})
}
