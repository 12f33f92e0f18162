package checkutil

import (
	"context"

	"github.com/godbus/dbus/v5"
)

// ConnectBus opens a private, authenticated connection (Hello sent) to the
// D-Bus address addr, or to the system bus when addr is "". The connection
// is closed when ctx ends, which also ends calls still waiting for a reply;
// the caller closes it otherwise.
func ConnectBus(ctx context.Context, addr string) (*dbus.Conn, error) {
	if addr == "" {
		return dbus.ConnectSystemBus(dbus.WithContext(ctx))
	}
	return dbus.Connect(addr, dbus.WithContext(ctx))
}
