// Package fleetlock speaks the FleetLock protocol, both sides:
//
//   - Locker is a plugins.Locker that is a FleetLock client, so offpeak nodes
//     can use airlock or any other FleetLock server;
//   - Server is a FleetLock server backed by any plugins.Locker (etcd,
//     Consul, file), so FleetLock clients such as zincati can share offpeak's
//     slots.
//
// The protocol is two endpoints, POST <base>/v1/pre-reboot (take a slot) and
// POST <base>/v1/steady-state (give it back), each with the header
// "fleet-lock-protocol: true" and the body
// {"client_params":{"id":"…","group":"…"}}. 200 means yes; anything else
// carries {"kind":"…","value":"…"}.
//
// offpeak extends it compatibly. A request may carry an "offpeak" object
// beside client_params (holder metadata, slot count, previous boot id,
// release reason); servers that do not know it ignore it. offpeak's server answers
// 200 with a JSON body (grant/release result and the group state) that plain
// clients ignore, and serves extra endpoints under <base>/v1/offpeak/:
//
//	GET  status?group=G                       LockState
//	GET  wait?group=G&revision=R&timeout=30s  LockState once Revision≠R (long poll)
//	POST slots  {"group":G,"slots":N}         SetSlots  (admin token)
//	POST freeze {FreezeRequest}               Freeze    (admin token)
//	POST thaw   {"group":G}                   Thaw      (admin token)
//
// Admin endpoints need "Authorization: Bearer <token>" matching the server's
// admin token and are disabled when the server has none.
package fleetlock

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/offpeak/offpeak/plugins"
)

// Protocol constants.
const (
	HeaderProtocol  = "fleet-lock-protocol"
	PathPreReboot   = "/v1/pre-reboot"
	PathSteadyState = "/v1/steady-state"
	PathStatus      = "/v1/offpeak/status"
	PathWait        = "/v1/offpeak/wait"
	PathSlots       = "/v1/offpeak/slots"
	PathFreeze      = "/v1/offpeak/freeze"
	PathThaw        = "/v1/offpeak/thaw"
)

// Error kinds. The first three are airlock's; a client maps KindFailedLock
// on pre-reboot to "not granted" rather than to an error.
const (
	KindInvalidIdentity = "invalid_client_identity"
	KindUnknownGroup    = "unknown_group"
	KindFailedLock      = "failed_lock"
	KindFrozen          = "group_frozen"
	KindOutsideWindow   = "outside_maintenance_window"
	KindUnavailable     = "lock_service_unavailable"
	KindInternal        = "internal_error"
	KindMethod          = "method_not_allowed"
	KindNotFound        = "not_found"
	KindBadRequest      = "bad_request"
	KindAdminDisabled   = "admin_disabled"
	KindUnauthorized    = "unauthorized"
	KindNodeIDCollision = "node_id_collision"
)

// maxBody bounds request bodies; a FleetLock body is a few dozen bytes.
const maxBody = 64 << 10

// Request is the body of pre-reboot and steady-state.
type Request struct {
	ClientParams ClientParams `json:"client_params"`
	Offpeak      *RequestExt  `json:"offpeak,omitempty"`
}

// ClientParams identifies the node.
type ClientParams struct {
	ID    string `json:"id"`
	Group string `json:"group"`
}

// RequestExt is offpeak's optional extension of a request. It carries
// what a node says about itself; the server decides on time and staleness
// by its own clock and policy (earlier clients also sent "now" and
// "reclaim_stale", which the server ignores).
type RequestExt struct {
	Holder         *plugins.Holder `json:"holder,omitempty"`
	Slots          int             `json:"slots,omitempty"`
	PreviousBootID string          `json:"previous_boot_id,omitempty"`
	Reason         string          `json:"reason,omitempty"`
}

// ErrorReply is the body of every non-200 reply.
type ErrorReply struct {
	Kind  string `json:"kind"`
	Value string `json:"value"`
	// State is offpeak's extension: the group's state with a refusal.
	State *plugins.LockState `json:"state,omitempty"`
}

// PreRebootReply is offpeak's 200 body for pre-reboot.
type PreRebootReply struct {
	Granted   bool              `json:"granted"`
	State     plugins.LockState `json:"state"`
	Reclaimed []plugins.Holder  `json:"reclaimed,omitempty"`
}

// SteadyStateReply is offpeak's 200 body for steady-state. Released is
// false when the id held no slot, which FleetLock still answers with 200.
type SteadyStateReply struct {
	Released bool              `json:"released"`
	State    plugins.LockState `json:"state"`
}

// SlotsRequest is the body of the slots endpoint.
type SlotsRequest struct {
	Group string `json:"group"`
	Slots int    `json:"slots"`
}

// GroupRequest is the body of the thaw endpoint.
type GroupRequest struct {
	Group string `json:"group"`
}

var errEmpty = errors.New("empty body")

// ParseRequest decodes and checks a pre-reboot or steady-state body: one
// JSON object, non-empty id and group. Unknown fields are ignored, as
// FleetLock clients may send more than the protocol names.
func ParseRequest(b []byte) (Request, error) {
	if len(bytes.TrimSpace(b)) == 0 {
		return Request{}, errEmpty
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	var r Request
	if err := dec.Decode(&r); err != nil {
		return Request{}, fmt.Errorf("body is not a FleetLock request: %w", err)
	}
	if dec.More() {
		return Request{}, errors.New("trailing data after the request object")
	}
	switch {
	case r.ClientParams.Group == "":
		return Request{}, errors.New("empty client group")
	case r.ClientParams.ID == "":
		return Request{}, errors.New("empty client ID")
	}
	if e := r.Offpeak; e != nil {
		if e.Holder != nil && e.Holder.ID != "" && e.Holder.ID != r.ClientParams.ID {
			return Request{}, fmt.Errorf("offpeak.holder.id %q differs from client_params.id %q", e.Holder.ID, r.ClientParams.ID)
		}
		if e.Slots < 0 {
			return Request{}, fmt.Errorf("offpeak.slots %d is negative", e.Slots)
		}
	}
	return r, nil
}
