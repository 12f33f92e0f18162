// Package updateengine drives Flatcar's update_engine over D-Bus
// (com.coreos.update1). update_engine downloads an update and writes it to
// the passive USR partition by itself; it never reboots. offpeak reads its
// status, asks it to look for an update, and wakes up on its StatusUpdate
// signal when an update becomes staged.
package updateengine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/godbus/dbus/v5"
)

// D-Bus names of update_engine.
const (
	BusName      = "com.coreos.update1"
	ObjectPath   = dbus.ObjectPath("/com/coreos/update1")
	Interface    = "com.coreos.update1.Manager"
	SignalMember = "StatusUpdate"
)

// Values of current_operation.
const (
	OpIdle                = "UPDATE_STATUS_IDLE"
	OpCheckingForUpdate   = "UPDATE_STATUS_CHECKING_FOR_UPDATE"
	OpUpdateAvailable     = "UPDATE_STATUS_UPDATE_AVAILABLE"
	OpDownloading         = "UPDATE_STATUS_DOWNLOADING"
	OpVerifying           = "UPDATE_STATUS_VERIFYING"
	OpFinalizing          = "UPDATE_STATUS_FINALIZING"
	OpUpdatedNeedReboot   = "UPDATE_STATUS_UPDATED_NEED_REBOOT"
	OpReportingErrorEvent = "UPDATE_STATUS_REPORTING_ERROR_EVENT"
	OpAttemptingRollback  = "UPDATE_STATUS_ATTEMPTING_ROLLBACK"
	OpDisabled            = "UPDATE_STATUS_DISABLED"
)

// knownOps are the operations this client understands; anything else is
// treated as "cannot tell".
var knownOps = map[string]bool{
	OpIdle: true, OpCheckingForUpdate: true, OpUpdateAvailable: true,
	OpDownloading: true, OpVerifying: true, OpFinalizing: true,
	OpUpdatedNeedReboot: true, OpReportingErrorEvent: true,
	OpAttemptingRollback: true, OpDisabled: true,
}

// ErrBadReply means update_engine answered with unexpected types.
var ErrBadReply = errors.New("bad reply from update_engine")

// ErrUnknownOperation means current_operation is not one this client knows.
var ErrUnknownOperation = errors.New("unknown update_engine operation")

// Status is update_engine's GetStatus answer (and StatusUpdate payload).
type Status struct {
	LastChecked      time.Time // zero when never checked
	Progress         float64   // 0..1 while downloading
	CurrentOperation string    // one of the Op constants
	NewVersion       string    // "0.0.0" when none
	NewSize          int64     // payload bytes
}

// Staged reports whether an update is installed and waits for a reboot.
func (s Status) Staged() bool { return s.CurrentOperation == OpUpdatedNeedReboot }

// Client calls update_engine on one connection (owned by the caller).
type Client struct {
	conn *dbus.Conn
	obj  dbus.BusObject
}

// NewClient returns a client on conn: the system bus in production, a
// private bus in tests.
func NewClient(conn *dbus.Conn) *Client {
	return &Client{conn: conn, obj: conn.Object(BusName, ObjectPath)}
}

// GetStatus returns update_engine's current status.
func (c *Client) GetStatus(ctx context.Context) (Status, error) {
	call := c.obj.CallWithContext(ctx, Interface+".GetStatus", 0)
	if call.Err != nil {
		return Status{}, fmt.Errorf("update_engine: GetStatus: %w", call.Err)
	}
	st, err := decodeStatus(call.Body)
	if err != nil {
		return Status{}, fmt.Errorf("update_engine: GetStatus: %w", err)
	}
	return st, nil
}

// AttemptUpdate asks update_engine to check for an update and, if there is
// one, download and install it into the passive partition. It returns as
// soon as update_engine accepted the request; progress arrives as
// StatusUpdate signals.
func (c *Client) AttemptUpdate(ctx context.Context) error {
	if call := c.obj.CallWithContext(ctx, Interface+".AttemptUpdate", 0); call.Err != nil {
		return fmt.Errorf("update_engine: AttemptUpdate: %w", call.Err)
	}
	return nil
}

// ResetStatus returns update_engine from UPDATED_NEED_REBOOT to IDLE (it
// discards the staged update's claim on the next boot).
func (c *Client) ResetStatus(ctx context.Context) error {
	if call := c.obj.CallWithContext(ctx, Interface+".ResetStatus", 0); call.Err != nil {
		return fmt.Errorf("update_engine: ResetStatus: %w", call.Err)
	}
	return nil
}

// Watch subscribes to StatusUpdate and returns a channel that first carries
// the current status, then each status update. A slow reader gets the
// newest status rather than a backlog (order is kept). The channel is closed
// when ctx ends or the connection closes; call Watch again then.
func (c *Client) Watch(ctx context.Context) (<-chan Status, error) {
	match := []dbus.MatchOption{
		dbus.WithMatchSender(BusName),
		dbus.WithMatchObjectPath(ObjectPath),
		dbus.WithMatchInterface(Interface),
		dbus.WithMatchMember(SignalMember),
	}
	if err := c.conn.AddMatchSignalContext(ctx, match...); err != nil {
		return nil, fmt.Errorf("update_engine: subscribe to %s: %w", SignalMember, err)
	}
	// Large enough that godbus never has to queue signals out of order
	// behind a busy reader.
	sigs := make(chan *dbus.Signal, 64)
	c.conn.Signal(sigs)
	unsubscribe := func() {
		c.conn.RemoveSignal(sigs)
		rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = c.conn.RemoveMatchSignalContext(rctx, match...)
	}

	// Read the status after subscribing so a change between the two is
	// not lost.
	initial, err := c.GetStatus(ctx)
	if err != nil {
		unsubscribe()
		return nil, err
	}

	out := make(chan Status)
	go func() {
		defer close(out)
		defer unsubscribe()
		pending, have := initial, true
		for {
			var send chan<- Status
			if have {
				send = out
			}
			select {
			case <-ctx.Done():
				return
			case sig, ok := <-sigs:
				if !ok {
					return
				}
				if sig.Path != ObjectPath || sig.Name != Interface+"."+SignalMember {
					continue
				}
				st, err := decodeStatus(sig.Body)
				if err != nil {
					// A malformed signal says nothing about the state;
					// wait for the next one.
					continue
				}
				pending, have = st, true
			case send <- pending:
				have = false
			}
		}
	}()
	return out, nil
}

// decodeStatus checks the (xdssx) body. Types are asserted exactly:
// godbus's Store would convert a number into a string.
func decodeStatus(body []any) (Status, error) {
	if len(body) != 5 {
		return Status{}, fmt.Errorf("%w: %d values, want (xdssx)", ErrBadReply, len(body))
	}
	last, ok1 := body[0].(int64)
	progress, ok2 := body[1].(float64)
	op, ok3 := body[2].(string)
	ver, ok4 := body[3].(string)
	size, ok5 := body[4].(int64)
	if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 {
		return Status{}, fmt.Errorf("%w: got (%T, %T, %T, %T, %T), want (xdssx)",
			ErrBadReply, body[0], body[1], body[2], body[3], body[4])
	}
	st := Status{Progress: progress, CurrentOperation: op, NewVersion: ver, NewSize: size}
	if last > 0 {
		st.LastChecked = time.Unix(last, 0).UTC()
	}
	return st, nil
}
