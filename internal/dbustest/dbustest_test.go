package dbustest

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/godbus/dbus/v5"
)

type echo struct{}

func (echo) Echo(s string) (string, *dbus.Error) { return s, nil }

func TestExportedMethodIsCallableThroughPrivateDaemon(t *testing.T) {
	d := New(t)
	if !strings.HasPrefix(d.Addr, "unix:") {
		t.Fatalf("address %q is not a unix address", d.Addr)
	}
	d.Serve(t, "org.example.Echo", "/org/example/Echo", "org.example.Echo", echo{})

	client := d.Conn(t)
	var got string
	err := client.Object("org.example.Echo", "/org/example/Echo").
		Call("org.example.Echo.Echo", 0, "hello").Store(&got)
	if err != nil {
		t.Fatalf("call: %v", err)
	}
	if got != "hello" {
		t.Fatalf("Echo returned %q, want %q", got, "hello")
	}
}

func TestClientsSupportUnixFDPassing(t *testing.T) {
	d := New(t)
	if !d.Conn(t).SupportsUnixFDs() {
		t.Fatal("connection to the private bus does not negotiate unix fd passing")
	}
}

func TestSecondOwnerOfNameIsRefused(t *testing.T) {
	d := New(t)
	if err := RequestName(d.Conn(t), "org.example.Taken"); err != nil {
		t.Fatal(err)
	}
	if err := RequestName(d.Conn(t), "org.example.Taken"); err == nil {
		t.Fatal("second RequestName succeeded, want an error")
	}
}

func TestCloseKillsDaemon(t *testing.T) {
	d := New(t)
	pid := d.cmd.Process.Pid
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	// The process has been reaped by Close, so signalling it must fail.
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("daemon pid %d still exists after Close (kill 0: %v)", pid, err)
	}
	if _, err := Connect(context.Background(), d.Addr); err == nil {
		t.Fatal("connecting after Close succeeded")
	}
	if err := d.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestLongDirectoryStillGetsBindableSocket(t *testing.T) {
	if _, err := exec.LookPath("dbus-daemon"); err != nil {
		t.Skip("dbus-daemon is not installed (apt-get install dbus)")
	}
	dir := t.TempDir() + "/" + strings.Repeat("x", 120)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	d, err := Start(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	conn, err := Connect(context.Background(), d.Addr)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
}

func TestEscapeAddrValue(t *testing.T) {
	tests := []struct{ in, want string }{
		{"/tmp/a/bus", "/tmp/a/bus"},
		{"/tmp/a b/bus", "/tmp/a%20b/bus"},
		{"/tmp/a,b=c;d", "/tmp/a%2cb%3dc%3bd"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := escapeAddrValue(tt.in); got != tt.want {
				t.Fatalf("escapeAddrValue(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}
