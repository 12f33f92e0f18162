package scheduler

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/offpeak/offpeak/scheduler/policy"
)

// ErrSlotHeld means a reload was refused because the node holds a slot that
// the new settings would look for somewhere else, or as another node.
var ErrSlotHeld = errors.New("a slot is held")

// Components are the parts of an agent its policy configures. A reload
// replaces all of them together, so nothing built from the old policy (a
// locker, a notifier, the node id) outlives it.
type Components struct {
	Policy   *policy.Policy
	NodeID   string
	Hostname string
	// Locker may be nil for strategies that take no slot.
	Locker    Locker
	Checks    func(plugin string) (HealthCheck, error)
	Detector  Detector
	Installer Installer
	Rebooter  Rebooter
	Notifier  Notifier
}

// SlotRef says where, and as whom, a slot is held: what must not change
// while the node holds it, or the node could no longer give it back.
type SlotRef struct {
	Locker string `json:"locker"`
	Group  string `json:"group"`
	Node   string `json:"node"`
	// Config is a digest of [lock.config] without its credentials: other
	// endpoints, another directory or prefix is another place.
	Config string `json:"config"`
}

func (s SlotRef) String() string {
	return fmt.Sprintf("in group %q of locker %q as node %q", s.Group, s.Locker, s.Node)
}

// changes lists what differs from s to t, for an operator.
func (s SlotRef) changes(t SlotRef) string {
	var c []string
	if s.Locker != t.Locker {
		c = append(c, fmt.Sprintf("locker %q instead of %q", t.Locker, s.Locker))
	}
	if s.Group != t.Group {
		c = append(c, fmt.Sprintf("group %q instead of %q", t.Group, s.Group))
	}
	if s.Node != t.Node {
		c = append(c, fmt.Sprintf("node id %q instead of %q", t.Node, s.Node))
	}
	if s.Config != t.Config {
		c = append(c, "other [lock.config] settings")
	}
	return strings.Join(c, ", ")
}

// slotRefFor is where p places the slot of node id.
func slotRefFor(p *policy.Policy, id string) SlotRef {
	cfg := map[string]any{}
	for k, v := range p.Lock.Config {
		// Credentials do not move a slot, and a digest of them in a
		// world-readable state file would be one more thing to guess at.
		if l := strings.ToLower(k); strings.Contains(l, "password") || strings.Contains(l, "token") || strings.Contains(l, "secret") || strings.Contains(l, "key") {
			continue
		}
		cfg[k] = v
	}
	// Map keys are sorted by encoding/json: the digest is stable.
	b, err := json.Marshal(cfg)
	if err != nil {
		b = []byte(fmt.Sprint(cfg))
	}
	sum := sha256.Sum256(b)
	return SlotRef{Locker: p.Lock.Plugin, Group: p.Node.Group, Node: id, Config: hex.EncodeToString(sum[:8])}
}

// slotRef is where the running policy places this node's slot.
func (a *Agent) slotRef() SlotRef { return slotRefFor(a.pol, a.opts.NodeID) }

// heldSlot returns where the slot the state holds lives, if it holds one
// in a locker. A state written before slots were recorded is taken to
// hold it under the running settings.
func (a *Agent) heldSlot() (SlotRef, bool) {
	if !a.st.holding() || a.st.Lockless || a.opts.DryRun {
		return SlotRef{}, false
	}
	if a.st.Slot != nil {
		return *a.st.Slot, true
	}
	return a.slotRef(), a.gates.Lock
}

// slotMoved blocks the pass when the policy no longer places the held slot
// where it was taken (the policy changed while the node rebooted, holding
// it): the node keeps the slot and says what to restore.
func (a *Agent) slotMoved(r *Result) bool {
	held, ok := a.heldSlot()
	if !ok {
		return false
	}
	if a.opts.Locker == nil {
		r.warn = true
		a.decide(r, DecisionBlocked, "holding a slot %s, but no locker to give it back through; the slot is kept: restore the [lock] settings it was taken with", held)
		return true
	}
	cur := a.slotRef()
	if cur == held {
		return false
	}
	r.warn = true
	a.decide(r, DecisionBlocked, "holding a slot %s, but the policy now says %s; the slot is kept: restore the [lock] and [node] settings it was taken with and reload, so it can be given back there",
		held, held.changes(cur))
	return true
}

// Reload puts a new policy in force with the components built from it. An
// unusable policy is refused, and so is one that would look for a slot the
// node holds elsewhere or as another node (ErrSlotHeld); then nothing
// changes. On success the caller closes the old components, on refusal the
// new ones.
func (a *Agent) Reload(c Components) error {
	if c.NodeID == "" {
		return ErrNoNodeID
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	cal, g, err := compile(c.Policy, c.Locker)
	if err != nil {
		return err
	}
	if held, ok := a.heldSlot(); ok {
		if c.Locker == nil {
			return fmt.Errorf("%w %s (phase %s) and the new policy builds no locker to give it back through: reload again", ErrSlotHeld, held, a.st.Phase)
		}
		if next := slotRefFor(c.Policy, c.NodeID); next != held {
			return fmt.Errorf("%w %s (phase %s) and the new policy names %s: reload again once the slot is given back",
				ErrSlotHeld, held, a.st.Phase, held.changes(next))
		}
	}
	a.pol, a.cal, a.gates = c.Policy, cal, g
	a.opts.Policy, a.opts.NodeID, a.opts.Hostname = c.Policy, c.NodeID, c.Hostname
	a.opts.Locker, a.opts.Checks, a.opts.Detector = c.Locker, c.Checks, c.Detector
	a.opts.Installer, a.opts.Rebooter, a.opts.Notifier = c.Installer, c.Rebooter, c.Notifier
	select {
	case a.reload <- struct{}{}:
	default:
	}
	return nil
}

// RecordReload keeps the outcome of a reload in the state: `offpeak status`
// shows a refused reload until one goes through.
func (a *Agent) RecordReload(err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.st.ReloadRefused, a.st.ReloadRefusedAt = "", time.Time{}
	if err != nil {
		a.st.ReloadRefused, a.st.ReloadRefusedAt = err.Error(), a.opts.Clock.Now()
	}
	if serr := a.save(); serr != nil {
		a.log.Warn("could not record the reload in the state", "err", serr)
	}
}
