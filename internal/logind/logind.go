// Package logind is a small client of systemd-logind's D-Bus API
// (org.freedesktop.login1): reboot, inhibitor locks and sessions. It works on
// any *dbus.Conn, the system bus in production and a private bus in tests.
package logind

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"

	"github.com/godbus/dbus/v5"
)

// D-Bus names of logind.
const (
	BusName          = "org.freedesktop.login1"
	ObjectPath       = dbus.ObjectPath("/org/freedesktop/login1")
	ManagerInterface = "org.freedesktop.login1.Manager"
	SessionInterface = "org.freedesktop.login1.Session"
)

// Error names logind and the bus return that callers may want to recognise.
const (
	ErrNameServiceUnknown    = "org.freedesktop.DBus.Error.ServiceUnknown"
	ErrNameNameHasNoOwner    = "org.freedesktop.DBus.Error.NameHasNoOwner"
	ErrNameNoServer          = "org.freedesktop.DBus.Error.NoServer"
	ErrNameDisconnected      = "org.freedesktop.DBus.Error.Disconnected"
	ErrNameUnknownObject     = "org.freedesktop.DBus.Error.UnknownObject"
	ErrNameUnknownInterface  = "org.freedesktop.DBus.Error.UnknownInterface"
	ErrNameUnknownMethod     = "org.freedesktop.DBus.Error.UnknownMethod"
	ErrNameAccessDenied      = "org.freedesktop.DBus.Error.AccessDenied"
	ErrNameOperationProgress = "org.freedesktop.login1.OperationInProgress"
	ErrNameNoSuchSession     = "org.freedesktop.login1.NoSuchSession"
)

// ErrUnavailable means logind could not be reached at all: no connection,
// or nobody owns org.freedesktop.login1. Callers may fall back to another
// mechanism; any other error is logind's answer and must be surfaced.
var ErrUnavailable = errors.New("logind unavailable")

// ErrBadReply means logind answered with something this client does not
// understand (wrong signature or types).
var ErrBadReply = errors.New("bad reply from logind")

// Inhibitor is one inhibitor lock as listed by ListInhibitors.
type Inhibitor struct {
	What string `json:"what"` // colon-separated: "shutdown:sleep"
	Who  string `json:"who"`
	Why  string `json:"why"`
	Mode string `json:"mode"` // "block", "delay" or "block-weak"
	UID  uint32 `json:"uid"`
	PID  uint32 `json:"pid"`
}

// Inhibits reports whether the lock covers what (e.g. "shutdown").
func (i Inhibitor) Inhibits(what string) bool {
	for _, w := range strings.Split(i.What, ":") {
		if w == what {
			return true
		}
	}
	return false
}

// Session is a login session with the properties the users check needs.
type Session struct {
	ID         string          `json:"id"`
	User       string          `json:"user"`
	UID        uint32          `json:"uid"`
	Seat       string          `json:"seat,omitempty"`
	Class      string          `json:"class"` // user, greeter, lock-screen, background, manager, …
	Type       string          `json:"type"`  // tty, x11, wayland, mir, unspecified
	Remote     bool            `json:"remote"`
	RemoteHost string          `json:"remote_host,omitempty"`
	TTY        string          `json:"tty,omitempty"`
	State      string          `json:"state"` // online, active, closing
	Path       dbus.ObjectPath `json:"-"`
}

// Client talks to logind on one connection. The connection stays owned by
// the caller.
type Client struct {
	conn *dbus.Conn
	obj  dbus.BusObject
}

// New returns a client using conn.
func New(conn *dbus.Conn) *Client {
	return &Client{conn: conn, obj: conn.Object(BusName, ObjectPath)}
}

// Reboot asks logind to reboot now. interactive=false means polkit must not
// prompt. The D-Bus error, if any, is returned wrapped: logind refusing
// (AccessDenied, OperationInProgress) is an answer the caller must see.
func (c *Client) Reboot(ctx context.Context, interactive bool) error {
	call := c.obj.CallWithContext(ctx, ManagerInterface+".Reboot", 0, interactive)
	if call.Err != nil {
		return wrap("Reboot", call.Err)
	}
	return nil
}

// ListInhibitors returns the inhibitor locks currently held.
func (c *Client) ListInhibitors(ctx context.Context) ([]Inhibitor, error) {
	call := c.obj.CallWithContext(ctx, ManagerInterface+".ListInhibitors", 0)
	if call.Err != nil {
		return nil, wrap("ListInhibitors", call.Err)
	}
	rows, err := structs(call.Body, "a(ssssuu)", "ssssuu")
	if err != nil {
		return nil, fmt.Errorf("logind: ListInhibitors: %w", err)
	}
	out := make([]Inhibitor, len(rows))
	for i, r := range rows {
		out[i] = Inhibitor{
			What: r[0].(string), Who: r[1].(string), Why: r[2].(string), Mode: r[3].(string),
			UID: r[4].(uint32), PID: r[5].(uint32),
		}
	}
	return out, nil
}

// Inhibit takes an inhibitor lock. logind keeps it until every copy of the
// returned file descriptor is closed; release closes ours and is safe to call
// more than once.
func (c *Client) Inhibit(ctx context.Context, what, who, why, mode string) (release func() error, err error) {
	if !c.conn.SupportsUnixFDs() {
		return nil, fmt.Errorf("logind: Inhibit: connection cannot pass file descriptors")
	}
	call := c.obj.CallWithContext(ctx, ManagerInterface+".Inhibit", 0, what, who, why, mode)
	if call.Err != nil {
		return nil, wrap("Inhibit", call.Err)
	}
	if len(call.Body) != 1 {
		closeFDs(call.Body)
		return nil, fmt.Errorf("logind: Inhibit: %w: %d values, want one fd", ErrBadReply, len(call.Body))
	}
	fd, ok := call.Body[0].(dbus.UnixFD)
	if !ok {
		closeFDs(call.Body)
		return nil, fmt.Errorf("logind: Inhibit: %w: got %T, want a unix fd", ErrBadReply, call.Body[0])
	}
	f := os.NewFile(uintptr(fd), "logind-inhibitor")
	var once sync.Once
	var cerr error
	return func() error {
		once.Do(func() { cerr = f.Close() })
		return cerr
	}, nil
}

type rawSession struct {
	ID   string
	UID  uint32
	User string
	Seat string
	Path dbus.ObjectPath
}

// ListSessions returns every session with its properties. A session that
// disappears between listing and reading its properties is left out (the
// user logged out meanwhile).
func (c *Client) ListSessions(ctx context.Context) ([]Session, error) {
	call := c.obj.CallWithContext(ctx, ManagerInterface+".ListSessions", 0)
	if call.Err != nil {
		return nil, wrap("ListSessions", call.Err)
	}
	rows, err := structs(call.Body, "a(susso)", "susso")
	if err != nil {
		return nil, fmt.Errorf("logind: ListSessions: %w", err)
	}
	out := make([]Session, 0, len(rows))
	for _, row := range rows {
		r := rawSession{
			ID: row[0].(string), UID: row[1].(uint32), User: row[2].(string),
			Seat: row[3].(string), Path: row[4].(dbus.ObjectPath),
		}
		if !r.Path.IsValid() {
			return nil, fmt.Errorf("logind: ListSessions: %w: invalid object path %q", ErrBadReply, r.Path)
		}
		s, err := c.session(ctx, r)
		if err != nil {
			switch ErrorName(err) {
			case ErrNameUnknownObject, ErrNameUnknownInterface, ErrNameUnknownMethod, ErrNameNoSuchSession:
				continue
			}
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

func (c *Client) session(ctx context.Context, r rawSession) (Session, error) {
	call := c.conn.Object(BusName, r.Path).
		CallWithContext(ctx, "org.freedesktop.DBus.Properties.GetAll", 0, SessionInterface)
	if call.Err != nil {
		return Session{}, wrap("session "+r.ID+" properties", call.Err)
	}
	var props map[string]dbus.Variant
	if err := call.Store(&props); err != nil {
		return Session{}, fmt.Errorf("logind: session %s properties: %w: want a{sv}: %w", r.ID, ErrBadReply, err)
	}
	s := Session{ID: r.ID, User: r.User, UID: r.UID, Seat: r.Seat, Path: r.Path}
	p := propReader{props: props, session: r.ID}
	p.str("Id", &s.ID)
	p.str("Name", &s.User)
	p.str("TTY", &s.TTY)
	p.str("Class", &s.Class)
	p.str("Type", &s.Type)
	p.str("State", &s.State)
	p.str("RemoteHost", &s.RemoteHost)
	p.boolean("Remote", &s.Remote)
	if v, ok := props["User"]; ok {
		if f, ok := v.Value().([]any); ok && len(f) == 2 && isType[uint32](f[0]) && isType[dbus.ObjectPath](f[1]) {
			s.UID = f[0].(uint32)
		} else {
			p.fail("User", v)
		}
	}
	if v, ok := props["Seat"]; ok {
		if f, ok := v.Value().([]any); ok && len(f) == 2 && isType[string](f[0]) && isType[dbus.ObjectPath](f[1]) {
			s.Seat = f[0].(string)
		} else {
			p.fail("Seat", v)
		}
	}
	if p.err != nil {
		return Session{}, p.err
	}
	return s, nil
}

// propReader copies typed properties, remembering the first type mismatch.
type propReader struct {
	props   map[string]dbus.Variant
	session string
	err     error
}

func (p *propReader) fail(name string, v dbus.Variant) {
	if p.err == nil {
		p.err = fmt.Errorf("logind: session %s: %w: property %s has type %s", p.session, ErrBadReply, name, v.Signature())
	}
}

func (p *propReader) str(name string, dst *string) {
	v, ok := p.props[name]
	if !ok {
		return
	}
	s, ok := v.Value().(string)
	if !ok {
		p.fail(name, v)
		return
	}
	*dst = s
}

func (p *propReader) boolean(name string, dst *bool) {
	v, ok := p.props[name]
	if !ok {
		return
	}
	b, ok := v.Value().(bool)
	if !ok {
		p.fail(name, v)
		return
	}
	*dst = b
}

// ErrorName returns the D-Bus error name carried by err, or "" when err is
// not a D-Bus error reply.
func ErrorName(err error) string {
	var v dbus.Error
	if errors.As(err, &v) {
		return v.Name
	}
	var p *dbus.Error
	if errors.As(err, &p) && p != nil {
		return p.Name
	}
	return ""
}

// IsUnavailable reports whether err means nobody answered: the connection is
// gone or logind is not on the bus.
func IsUnavailable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrUnavailable) || errors.Is(err, dbus.ErrClosed) ||
		errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		return true
	}
	switch ErrorName(err) {
	case ErrNameServiceUnknown, ErrNameNameHasNoOwner, ErrNameNoServer, ErrNameDisconnected:
		return true
	}
	return false
}

func wrap(method string, err error) error {
	// godbus prints only the message; the error name is what an operator
	// searches for ("…AccessDenied" means polkit said no).
	name := ErrorName(err)
	if name != "" {
		name += ": "
	}
	if IsUnavailable(err) {
		return fmt.Errorf("logind: %s: %w: %s%w", method, ErrUnavailable, name, err)
	}
	return fmt.Errorf("logind: %s: %s%w", method, name, err)
}

func closeFDs(body []any) {
	for _, v := range body {
		if fd, ok := v.(dbus.UnixFD); ok {
			_ = os.NewFile(uintptr(fd), "").Close()
		}
	}
}

// structs checks that body is exactly one array of structs whose fields
// have the D-Bus types in fields (s, u, o, b only) and returns the rows.
// godbus would otherwise convert mismatched numbers into strings silently.
func structs(body []any, sig, fields string) ([][]any, error) {
	if len(body) != 1 {
		return nil, fmt.Errorf("%w: %d values, want %s", ErrBadReply, len(body), sig)
	}
	rows, ok := body[0].([][]any)
	if !ok {
		return nil, fmt.Errorf("%w: got %T, want %s", ErrBadReply, body[0], sig)
	}
	for i, row := range rows {
		if len(row) != len(fields) {
			return nil, fmt.Errorf("%w: element %d has %d fields, want %s", ErrBadReply, i, len(row), sig)
		}
		for j, f := range []byte(fields) {
			var ok bool
			switch f {
			case 's':
				_, ok = row[j].(string)
			case 'u':
				_, ok = row[j].(uint32)
			case 'o':
				_, ok = row[j].(dbus.ObjectPath)
			case 'b':
				_, ok = row[j].(bool)
			}
			if !ok {
				return nil, fmt.Errorf("%w: element %d field %d is %T, want %s", ErrBadReply, i, j, row[j], sig)
			}
		}
	}
	return rows, nil
}

func isType[T any](v any) bool {
	_, ok := v.(T)
	return ok
}
