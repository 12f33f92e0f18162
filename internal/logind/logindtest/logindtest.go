// Package logindtest exports a scripted org.freedesktop.login1 service on a
// private bus (see dbustest) so logind clients can be tested end to end over
// D-Bus: Reboot is recorded instead of performed, inhibitors and sessions
// are whatever the test sets.
package logindtest

import (
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"
	"testing"

	"github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/prop"

	"github.com/offpeak/offpeak/internal/dbustest"
	"github.com/offpeak/offpeak/internal/logind"
)

// Server is the test logind.
type Server struct {
	conn *dbus.Conn

	mu          sync.Mutex
	rebootCalls []bool
	rebootErr   *dbus.Error
	scripted    []logind.Inhibitor
	held        map[int]*held
	nextID      int
	// unsent holds our copies of write ends handed out by Inhibit. They
	// can only be closed once the reply carrying them has been sent; see
	// flushLocked.
	unsent   []*os.File
	sessions []sessionEntry
	changed  chan struct{} // closed and replaced whenever held changes

	rebooted chan bool
}

type held struct {
	inh logind.Inhibitor
	r   *os.File
}

type sessionEntry struct {
	ID   string
	UID  uint32
	User string
	Seat string
	Path dbus.ObjectPath
}

// Start exports the test logind on d and owns org.freedesktop.login1.
func Start(t testing.TB, d *dbustest.Daemon) *Server {
	t.Helper()
	s := &Server{
		held:     map[int]*held{},
		changed:  make(chan struct{}),
		rebooted: make(chan bool, 64),
	}
	s.conn = d.Serve(t, logind.BusName, logind.ObjectPath, logind.ManagerInterface, &manager{s: s})
	t.Cleanup(s.closeAll)
	return s
}

// Conn is the server's own connection (to export more objects).
func (s *Server) Conn() *dbus.Conn { return s.conn }

// SetRebootError makes later Reboot calls fail with the D-Bus error name
// (e.g. logind.ErrNameAccessDenied); "" makes them succeed again.
func (s *Server) SetRebootError(name, message string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if name == "" {
		s.rebootErr = nil
		return
	}
	s.rebootErr = dbus.NewError(name, []any{message})
}

// RebootCalls returns the interactive argument of every Reboot call so far.
func (s *Server) RebootCalls() []bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]bool(nil), s.rebootCalls...)
}

// Rebooted delivers the argument of each Reboot call (buffered).
func (s *Server) Rebooted() <-chan bool { return s.rebooted }

// SetInhibitors replaces the scripted inhibitors listed by ListInhibitors
// (in addition to the ones taken through Inhibit).
func (s *Server) SetInhibitors(list []logind.Inhibitor) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.scripted = append([]logind.Inhibitor(nil), list...)
}

// Held returns the inhibitors taken through Inhibit and not yet released.
func (s *Server) Held() []logind.Inhibitor {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flushLocked()
	return s.heldLocked()
}

// WaitReleased blocks until no inhibitor taken through Inhibit by who is
// held any more.
func (s *Server) WaitReleased(ctx context.Context, who string) error {
	for {
		s.mu.Lock()
		s.flushLocked()
		found := false
		for _, h := range s.held {
			if h.inh.Who == who {
				found = true
			}
		}
		ch := s.changed
		s.mu.Unlock()
		if !found {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("inhibitor of %q still held: %w", who, ctx.Err())
		}
	}
}

// SetSessions replaces the sessions and exports one Session object each.
func (s *Server) SetSessions(t testing.TB, sessions []logind.Session) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.sessions {
		_ = s.conn.Export(nil, e.Path, "org.freedesktop.DBus.Properties")
	}
	s.sessions = nil
	for i, ses := range sessions {
		path := dbus.ObjectPath(fmt.Sprintf("/org/freedesktop/login1/session/s%d", i))
		m := prop.Map{logind.SessionInterface: {
			"Id":   {Value: ses.ID, Emit: prop.EmitFalse},
			"Name": {Value: ses.User, Emit: prop.EmitFalse},
			"User": {Value: struct {
				UID  uint32
				Path dbus.ObjectPath
			}{ses.UID, dbus.ObjectPath(fmt.Sprintf("/org/freedesktop/login1/user/_%d", ses.UID))}, Emit: prop.EmitFalse},
			"Seat": {Value: struct {
				ID   string
				Path dbus.ObjectPath
			}{ses.Seat, "/"}, Emit: prop.EmitFalse},
			"TTY":        {Value: ses.TTY, Emit: prop.EmitFalse},
			"Display":    {Value: "", Emit: prop.EmitFalse},
			"Remote":     {Value: ses.Remote, Emit: prop.EmitFalse},
			"RemoteHost": {Value: ses.RemoteHost, Emit: prop.EmitFalse},
			"Class":      {Value: ses.Class, Emit: prop.EmitFalse},
			"Type":       {Value: ses.Type, Emit: prop.EmitFalse},
			"State":      {Value: ses.State, Emit: prop.EmitFalse},
			"Active":     {Value: ses.State == "active", Emit: prop.EmitFalse},
			"Leader":     {Value: uint32(1000 + i), Emit: prop.EmitFalse},
		}}
		if _, err := prop.Export(s.conn, path, m); err != nil {
			t.Fatalf("export session %s: %v", ses.ID, err)
		}
		s.sessions = append(s.sessions, sessionEntry{ID: ses.ID, UID: ses.UID, User: ses.User, Seat: ses.Seat, Path: path})
	}
}

// AddVanishedSession lists a session whose object does not exist, as when
// a user logs out between ListSessions and reading the session.
func (s *Server) AddVanishedSession(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sessions = append(s.sessions, sessionEntry{ID: id, User: "gone", Path: dbus.ObjectPath("/org/freedesktop/login1/session/gone_" + id)})
}

func (s *Server) heldLocked() []logind.Inhibitor {
	ids := make([]int, 0, len(s.held))
	for id := range s.held {
		ids = append(ids, id)
	}
	sort.Ints(ids)
	out := make([]logind.Inhibitor, 0, len(ids))
	for _, id := range ids {
		out = append(out, s.held[id].inh)
	}
	return out
}

// flushLocked closes our copies of handed-out write ends. It runs only from
// the test's own accessors, which the test calls after the client's Inhibit
// returned, i.e. after the reply (and the fd in it) was sent.
func (s *Server) flushLocked() {
	for _, f := range s.unsent {
		_ = f.Close()
	}
	s.unsent = nil
}

func (s *Server) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *Server) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.flushLocked()
	for _, h := range s.held {
		_ = h.r.Close()
	}
}

// manager implements org.freedesktop.login1.Manager.
type manager struct{ s *Server }

func (m *manager) Reboot(interactive bool) *dbus.Error {
	s := m.s
	s.mu.Lock()
	s.rebootCalls = append(s.rebootCalls, interactive)
	err := s.rebootErr
	s.mu.Unlock()
	select {
	case s.rebooted <- interactive:
	default:
	}
	return err
}

type wireInhibitor struct {
	What, Who, Why, Mode string
	UID, PID             uint32
}

func (m *manager) ListInhibitors() ([]wireInhibitor, *dbus.Error) {
	s := m.s
	s.mu.Lock()
	defer s.mu.Unlock()
	all := append(append([]logind.Inhibitor(nil), s.scripted...), s.heldLocked()...)
	out := make([]wireInhibitor, len(all))
	for i, in := range all {
		out[i] = wireInhibitor(in)
	}
	return out, nil
}

func (m *manager) Inhibit(what, who, why, mode string) (dbus.UnixFD, *dbus.Error) {
	s := m.s
	switch mode {
	case "block", "delay", "block-weak":
	default:
		return -1, dbus.NewError("org.freedesktop.DBus.Error.InvalidArgs", []any{"Invalid mode specification " + mode})
	}
	r, w, err := os.Pipe()
	if err != nil {
		return -1, dbus.MakeFailedError(err)
	}
	fd := dbus.UnixFD(w.Fd()) // read before w is shared with flushLocked
	s.mu.Lock()
	id := s.nextID
	s.nextID++
	s.held[id] = &held{inh: logind.Inhibitor{What: what, Who: who, Why: why, Mode: mode, UID: uint32(os.Getuid()), PID: uint32(os.Getpid())}, r: r}
	s.unsent = append(s.unsent, w)
	s.notifyLocked()
	s.mu.Unlock()

	// Like logind, the lock ends when every write end is closed.
	go func() {
		_, _ = io.Copy(io.Discard, r)
		s.mu.Lock()
		defer s.mu.Unlock()
		if _, ok := s.held[id]; ok {
			delete(s.held, id)
			_ = r.Close()
			s.notifyLocked()
		}
	}()
	return fd, nil
}

type wireSession struct {
	ID   string
	UID  uint32
	User string
	Seat string
	Path dbus.ObjectPath
}

func (m *manager) ListSessions() ([]wireSession, *dbus.Error) {
	s := m.s
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]wireSession, len(s.sessions))
	for i, e := range s.sessions {
		out[i] = wireSession(e)
	}
	return out, nil
}
