package scheduler

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"
)

// State is what the agent persists between passes and across reboots.
type State struct {
	Phase          Phase     `json:"phase"`
	Group          string    `json:"group,omitempty"` // group the slot belongs to
	SlotAcquiredAt time.Time `json:"slot_acquired_at,omitzero"`
	// SlotBootID is the boot id this node wrote into its holder record at
	// its last grant. After a reboot while holding, it tells the locker that
	// the record of the earlier boot is this node's (plugins.SameNode).
	SlotBootID        string                 `json:"slot_boot_id,omitempty"`
	BootID            string                 `json:"boot_id,omitempty"`
	RebootFromBootID  string                 `json:"reboot_from_boot_id,omitempty"`
	RebootRequestedAt time.Time              `json:"reboot_requested_at,omitzero"`
	RebootError       string                 `json:"reboot_error,omitempty"`
	PostBootSince     time.Time              `json:"post_boot_since,omitzero"`
	RolledBack        bool                   `json:"rolled_back,omitempty"`
	FailureReason     string                 `json:"failure_reason,omitempty"`
	Reboots           []time.Time            `json:"reboots,omitempty"`
	LastReboot        time.Time              `json:"last_reboot,omitzero"`
	CheckFailures     int                    `json:"check_failures,omitempty"`
	BackoffUntil      time.Time              `json:"backoff_until,omitzero"`
	Checks            map[string]CheckRecord `json:"checks,omitempty"`
	// Lockless: the reboot went ahead without a slot (best-effort), so
	// there is nothing to give back.
	Lockless bool `json:"lockless,omitempty"`
	// Slot is where the slot was taken, while one may be held.
	Slot *SlotRef `json:"slot,omitempty"`
	// ReloadRefused is why the last policy reload was refused, until one
	// goes through.
	ReloadRefused   string    `json:"reload_refused,omitempty"`
	ReloadRefusedAt time.Time `json:"reload_refused_at,omitzero"`
	Last            *Result   `json:"last,omitempty"`
}

// UnmarshalJSON reads a state file strictly. Content the agent cannot
// account for (null, no or an unknown phase, a key it does not know) is an
// error, so a damaged file stops the agent instead of reading as idle: a node
// that was mid-reboot would otherwise take a slot again and forget its
// reboot history.
func (s *State) UnmarshalJSON(b []byte) error {
	if bytes.Equal(bytes.TrimSpace(b), []byte("null")) {
		return errors.New("state is null")
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(b, &keys); err != nil {
		return err
	}
	known := map[string]bool{}
	t := reflect.TypeFor[State]()
	for i := range t.NumField() {
		known[strings.Split(t.Field(i).Tag.Get("json"), ",")[0]] = true
	}
	for k := range keys {
		if !known[k] {
			return fmt.Errorf("unknown key %q", k)
		}
	}
	type plain State
	var v plain
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	switch v.Phase {
	case "":
		return errors.New("no phase")
	case PhaseIdle, PhaseAcquiring, PhaseHolding, PhaseRebooting, PhasePostBoot, PhaseFailed:
	default:
		return fmt.Errorf("unknown phase %q", v.Phase)
	}
	*s = State(v)
	return nil
}

// holding reports whether the state may hold a slot.
func (s *State) holding() bool {
	switch s.Phase {
	case PhaseAcquiring, PhaseHolding, PhaseRebooting, PhasePostBoot, PhaseFailed:
		return true
	}
	return false
}

// State returns a copy of the persisted state.
func (a *Agent) State() State {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.st
}

func (a *Agent) save() error {
	if !a.st.holding() {
		a.st.Slot = nil
	}
	if a.opts.Store == nil {
		return nil
	}
	if err := a.opts.Store.Save(&a.st); err != nil {
		return fmt.Errorf("saving state: %w", err)
	}
	return nil
}
