// Package dbustest runs a private dbus-daemon for tests, so D-Bus clients are
// exercised against the real broker rather than a mock of it. Services the
// code under test talks to (logind, systemd, update_engine) are then exported
// on that bus by the test with godbus.
package dbustest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
)

// ErrNoDaemon is returned by Start when no dbus-daemon binary is installed.
var ErrNoDaemon = errors.New("dbus-daemon not found in PATH")

// startTimeout bounds how long the daemon may take to print its address.
const startTimeout = 15 * time.Second

// maxSocketPath keeps the socket path inside sun_path (108 bytes with NUL).
const maxSocketPath = 100

// Daemon is a running private dbus-daemon.
type Daemon struct {
	// Addr is the bus address the daemon printed, e.g.
	// "unix:path=/tmp/x/bus,guid=…"; pass it to dbus.Connect.
	Addr string

	cmd     *exec.Cmd
	exited  chan struct{}
	stderr  *lockedBuffer
	tmpDir  string // removed on Close when the socket had to move out of dir
	closeMu sync.Mutex
	closed  bool
}

// Start launches `dbus-daemon --nofork --print-address` with a generated,
// permissive configuration (any name may be owned, any method called, auth
// EXTERNAL) listening on a unix socket in dir. The caller must Close it.
func Start(ctx context.Context, dir string) (*Daemon, error) {
	bin, err := exec.LookPath("dbus-daemon")
	if err != nil {
		return nil, ErrNoDaemon
	}
	d := &Daemon{exited: make(chan struct{}), stderr: &lockedBuffer{}}

	sockDir := dir
	if len(filepath.Join(dir, "bus")) > maxSocketPath {
		// t.TempDir paths grow with the test name; a unix socket path
		// longer than sun_path cannot be bound.
		sockDir, err = os.MkdirTemp("", "dbt")
		if err != nil {
			return nil, fmt.Errorf("dbustest: socket dir: %w", err)
		}
		d.tmpDir = sockDir
	}
	sock := filepath.Join(sockDir, "bus")
	confPath := filepath.Join(dir, "bus.conf")
	if err := os.WriteFile(confPath, []byte(config(sock)), 0o600); err != nil {
		d.removeTmp()
		return nil, fmt.Errorf("dbustest: write config: %w", err)
	}

	cmd := exec.Command(bin, "--config-file="+confPath, "--print-address", "--nofork")
	// Kill the daemon if the test binary dies without running cleanups
	// (e.g. a -timeout panic), so no daemon is left behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stderr = d.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		d.removeTmp()
		return nil, fmt.Errorf("dbustest: stdout pipe: %w", err)
	}
	if err := cmd.Start(); err != nil {
		d.removeTmp()
		return nil, fmt.Errorf("dbustest: start dbus-daemon: %w", err)
	}
	d.cmd = cmd

	type line struct {
		s   string
		err error
	}
	lines := make(chan line, 1)
	go func() {
		r := bufio.NewReader(stdout)
		s, err := r.ReadString('\n')
		lines <- line{s, err}
		// Nothing else is printed, but keep draining so the daemon never
		// blocks on a full pipe.
		_, _ = io.Copy(io.Discard, r)
	}()
	go func() {
		_ = cmd.Wait()
		close(d.exited)
	}()

	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	select {
	case l := <-lines:
		addr := strings.TrimSpace(l.s)
		if l.err != nil || addr == "" {
			d.Close()
			return nil, fmt.Errorf("dbustest: dbus-daemon printed no address (%v): %s", l.err, d.stderr.String())
		}
		d.Addr = addr
		return d, nil
	case <-ctx.Done():
		d.Close()
		return nil, fmt.Errorf("dbustest: waiting for dbus-daemon: %w", ctx.Err())
	case <-timer.C:
		d.Close()
		return nil, fmt.Errorf("dbustest: dbus-daemon did not print its address within %s: %s", startTimeout, d.stderr.String())
	}
}

// Close kills the daemon and waits for it to exit. It is safe to call more
// than once.
func (d *Daemon) Close() error {
	d.closeMu.Lock()
	defer d.closeMu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	if d.cmd != nil && d.cmd.Process != nil {
		_ = d.cmd.Process.Kill()
		<-d.exited
	}
	d.removeTmp()
	return nil
}

// Stderr returns what the daemon wrote to stderr so far (for test failures).
func (d *Daemon) Stderr() string { return d.stderr.String() }

func (d *Daemon) removeTmp() {
	if d.tmpDir != "" {
		_ = os.RemoveAll(d.tmpDir)
	}
}

// New starts a daemon for the test and stops it in t.Cleanup. It skips the
// test when dbus-daemon is not installed (CI installs the dbus package).
func New(t testing.TB) *Daemon {
	t.Helper()
	d, err := Start(context.Background(), t.TempDir())
	if errors.Is(err, ErrNoDaemon) {
		t.Skip("dbus-daemon is not installed (apt-get install dbus); skipping D-Bus test")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

// Conn opens a new authenticated connection (Auth + Hello) to the daemon,
// closed in t.Cleanup.
func (d *Daemon) Conn(t testing.TB) *dbus.Conn {
	t.Helper()
	conn, err := Connect(context.Background(), d.Addr)
	if err != nil {
		t.Fatalf("connect to private bus: %v (daemon stderr: %s)", err, d.Stderr())
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// Connect dials addr, authenticates and sends Hello.
func Connect(ctx context.Context, addr string) (*dbus.Conn, error) {
	conn, err := dbus.Connect(addr, dbus.WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("dbustest: connect %s: %w", addr, err)
	}
	return conn, nil
}

// RequestName makes conn the primary owner of name.
func RequestName(conn *dbus.Conn, name string) error {
	reply, err := conn.RequestName(name, dbus.NameFlagDoNotQueue)
	if err != nil {
		return fmt.Errorf("dbustest: request name %s: %w", name, err)
	}
	if reply != dbus.RequestNameReplyPrimaryOwner {
		return fmt.Errorf("dbustest: request name %s: not primary owner (reply %d)", name, reply)
	}
	return nil
}

// Serve connects a new connection, exports v at path under iface, and then
// takes the well-known name, so a client never sees the name before the
// object exists. The connection is closed in t.Cleanup; closing it drops
// the name.
func (d *Daemon) Serve(t testing.TB, name string, path dbus.ObjectPath, iface string, v any) *dbus.Conn {
	t.Helper()
	conn := d.Conn(t)
	if err := conn.Export(v, path, iface); err != nil {
		t.Fatalf("export %s %s: %v", path, iface, err)
	}
	if err := RequestName(conn, name); err != nil {
		t.Fatal(err)
	}
	return conn
}

// config returns a session-bus-like configuration that allows everything.
func config(sock string) string {
	var esc bytes.Buffer
	_ = xml.EscapeText(&esc, []byte("unix:path="+escapeAddrValue(sock)))
	return `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>` + esc.String() + `</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
`
}

// escapeAddrValue escapes a D-Bus address value: bytes outside the optionally
// escaped set [-0-9A-Za-z_/.\*] become %XX.
func escapeAddrValue(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9',
			c == '-', c == '_', c == '/', c == '.', c == '\\', c == '*':
			b.WriteByte(c)
		default:
			fmt.Fprintf(&b, "%%%02x", c)
		}
	}
	return b.String()
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
