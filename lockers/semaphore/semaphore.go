// Package semaphore holds the storage-independent part of offpeak's
// key-value lockers (etcd and Consul): the airlock-compatible semaphore value
// {"total_slots":N,"holders":[...]}, the records offpeak keeps beside it
// (holder metadata, the freeze marker, reclaim events) and their layout under
// a group's key prefix, the pure decision an Acquire makes from a snapshot of
// them, and the operations built on that (Ops): argument checks, the
// compare-and-swap retry loop and logging. A backend provides only a Store:
// one consistent read of a group and one atomic conditional write.
package semaphore

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/offpeak/offpeak/plugins"
)

// ErrMalformed marks a stored record that does not decode. Nothing is
// written back over it; an operator has to repair or delete it.
var ErrMalformed = errors.New("malformed lock record")

// MaxIDLen bounds group names and node ids; they end up in keys.
const MaxIDLen = plugins.MaxNameLen

// AirlockKey is the key airlock (and therefore FleetLock clients behind it)
// uses for a group's semaphore. The group is query-escaped as airlock does.
func AirlockKey(group string) string {
	return "com.coreos.airlock/groups/" + url.QueryEscape(group) + "/v1/semaphore"
}

// EscapeSegment makes a group or id safe to use as one key segment.
func EscapeSegment(s string) string { return url.QueryEscape(s) }

// Layout of offpeak's records under a group's key prefix (both backends use
// it; only the prefix and the semaphore's key differ):
//
//	holders/<id>             plugins.Holder as JSON
//	frozen                   Frozen as JSON
//	events/<unixnano>-<id>   Event as JSON
const (
	HoldersDir = "holders/"
	FrozenKey  = "frozen"
	eventsDir  = "events/"
)

// HolderKey is the relative key of id's metadata.
func HolderKey(id string) string { return HoldersDir + EscapeSegment(id) }

// EventKey is the relative key of an event about id at t: sortable by time,
// unique per holder.
func EventKey(t time.Time, id string) string {
	return fmt.Sprintf("%s%020d-%s", eventsDir, t.UnixNano(), EscapeSegment(id))
}

// ValidateName checks a group name or node id: non-empty, bounded,
// printable, no spaces (plugins.ValidateName).
func ValidateName(kind, s string) error { return plugins.ValidateName(kind, s) }

// Value is the semaphore exactly as airlock stores it. Fields written by
// other tools are kept in Extra and written back unchanged, so offpeak never
// drops data it does not understand.
type Value struct {
	TotalSlots uint64
	Holders    []string // kept sorted: airlock binary-searches this list
	Extra      map[string]json.RawMessage
}

// New returns an empty semaphore with n slots.
func New(n uint64) *Value { return &Value{TotalSlots: n, Holders: []string{}} }

// Parse decodes and checks a stored semaphore. It rejects anything airlock
// could not have written: a non-object, a missing or non-integer
// total_slots, holders that are not a list of distinct non-empty strings.
func Parse(b []byte) (*Value, error) {
	var raw map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("%w: semaphore is not a JSON object: %w", ErrMalformed, err)
	}
	if raw == nil {
		return nil, fmt.Errorf("%w: semaphore is null", ErrMalformed)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data after semaphore object", ErrMalformed)
	}
	v := &Value{Holders: []string{}}
	ts, ok := raw["total_slots"]
	if !ok {
		return nil, fmt.Errorf("%w: semaphore has no total_slots", ErrMalformed)
	}
	if err := json.Unmarshal(ts, &v.TotalSlots); err != nil {
		return nil, fmt.Errorf("%w: total_slots must be a non-negative integer: %s", ErrMalformed, ts)
	}
	if v.TotalSlots > 1<<31 {
		return nil, fmt.Errorf("%w: total_slots %d is implausibly large", ErrMalformed, v.TotalSlots)
	}
	if hs, ok := raw["holders"]; ok && string(hs) != "null" {
		if err := json.Unmarshal(hs, &v.Holders); err != nil {
			return nil, fmt.Errorf("%w: holders must be a list of strings: %w", ErrMalformed, err)
		}
	}
	seen := make(map[string]bool, len(v.Holders))
	for _, h := range v.Holders {
		if h == "" {
			return nil, fmt.Errorf("%w: empty holder id", ErrMalformed)
		}
		if seen[h] {
			return nil, fmt.Errorf("%w: holder %q listed twice", ErrMalformed, h)
		}
		seen[h] = true
	}
	sort.Strings(v.Holders)
	delete(raw, "total_slots")
	delete(raw, "holders")
	if len(raw) > 0 {
		v.Extra = raw
	}
	return v, nil
}

// Marshal encodes the semaphore with total_slots and holders first, in
// airlock's order and types, followed by any preserved extra fields.
func (v *Value) Marshal() ([]byte, error) {
	var buf bytes.Buffer
	hs := v.Holders
	if hs == nil {
		hs = []string{}
	}
	h, err := json.Marshal(hs)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(&buf, `{"total_slots":%d,"holders":%s`, v.TotalSlots, h)
	for _, k := range slices.Sorted(maps.Keys(v.Extra)) {
		kb, err := json.Marshal(k)
		if err != nil {
			return nil, err
		}
		buf.WriteByte(',')
		buf.Write(kb)
		buf.WriteByte(':')
		buf.Write(v.Extra[k])
	}
	buf.WriteByte('}')
	return buf.Bytes(), nil
}

// Clone returns a deep copy.
func (v *Value) Clone() *Value {
	hs := slices.Clone(v.Holders)
	if hs == nil {
		hs = []string{}
	}
	return &Value{TotalSlots: v.TotalSlots, Holders: hs, Extra: maps.Clone(v.Extra)}
}

// Has reports whether id holds a slot.
func (v *Value) Has(id string) bool {
	i := sort.SearchStrings(v.Holders, id)
	return i < len(v.Holders) && v.Holders[i] == id
}

// Add inserts id, keeping the list sorted. It does not check capacity.
func (v *Value) Add(id string) {
	i := sort.SearchStrings(v.Holders, id)
	if i < len(v.Holders) && v.Holders[i] == id {
		return
	}
	v.Holders = slices.Insert(v.Holders, i, id)
}

// Remove deletes id and reports whether it was present.
func (v *Value) Remove(id string) bool {
	i := sort.SearchStrings(v.Holders, id)
	if i < len(v.Holders) && v.Holders[i] == id {
		v.Holders = slices.Delete(v.Holders, i, i+1)
		return true
	}
	return false
}

// Frozen is the freeze marker stored beside the semaphore. A freeze is
// encoded in the semaphore itself, which is what airlock reads: total_slots
// is 0 while frozen, so airlock (and anything following its rules) grants
// nobody new, while existing holders keep their slots. The count to restore
// at the thaw lives here, in offpeak's record, because airlock drops fields
// of the semaphore value it does not know.
type Frozen struct {
	Reason string    `json:"reason"`
	By     string    `json:"by,omitempty"`
	At     time.Time `json:"at,omitzero"`
	// SavedSlots is the total_slots the thaw restores. Nil in a marker
	// written before freezes set total_slots to 0: such a freeze left the
	// live count in place, and the thaw leaves it alone.
	SavedSlots *uint64 `json:"saved_total_slots,omitempty"`
}

// Slots is the group's slot count as an operator means it: the saved count
// while frozen, else the semaphore's.
func (s Snapshot) Slots() uint64 {
	if s.Frozen != nil && s.Frozen.SavedSlots != nil {
		return *s.Frozen.SavedSlots
	}
	if s.Sem != nil {
		return s.Sem.TotalSlots
	}
	return 0
}

// parseFrozen decodes a freeze marker.
func parseFrozen(b []byte) (*Frozen, error) {
	var f Frozen
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("%w: freeze marker: %w", ErrMalformed, err)
	}
	return &f, nil
}

// parseHolder decodes a holder metadata record and checks it belongs to id.
func parseHolder(id string, b []byte) (plugins.Holder, error) {
	var h plugins.Holder
	if err := json.Unmarshal(b, &h); err != nil {
		return plugins.Holder{}, fmt.Errorf("%w: metadata of holder %q: %w", ErrMalformed, id, err)
	}
	if h.ID != id {
		return plugins.Holder{}, fmt.Errorf("%w: metadata stored for holder %q names %q", ErrMalformed, id, h.ID)
	}
	return h, nil
}

// Event is a history record, written when a stale holder is reclaimed.
type Event struct {
	Time   time.Time      `json:"time"`
	Kind   string         `json:"kind"` // "reclaim"
	Reason string         `json:"reason"`
	By     string         `json:"by"` // the node whose request removed the holder
	Holder plugins.Holder `json:"holder"`
}

// Snapshot is one consistent read of a group.
type Snapshot struct {
	Sem    *Value                    // nil: the semaphore does not exist yet
	Meta   map[string]plugins.Holder // holder metadata by id; may hold ids not in Sem
	Frozen *Frozen                   // nil: not frozen
	// Version is the store's version of the semaphore key, which a guarded
	// Write compares (etcd's key version, Consul's ModifyIndex); 0: absent.
	Version uint64
	// FrozenVersion is the store's version of the freeze marker, which a
	// Write with GuardFrozen compares: a value that never repeats once the
	// marker is deleted and written again (etcd's ModRevision, Consul's
	// ModifyIndex); 0: absent.
	FrozenVersion uint64
	// Revision is the store revision of the read, LockState.Revision.
	Revision uint64
}

// SetSem decodes the semaphore value read at version.
func (s *Snapshot) SetSem(b []byte, version uint64) error {
	v, err := Parse(b)
	if err != nil {
		return err
	}
	s.Sem, s.Version = v, version
	return nil
}

// AddRecord decodes one of offpeak's records; rel is its key relative to the
// group's prefix and version its store version (used for the freeze
// marker, see FrozenVersion). Keys outside the layout (events included) are
// ignored.
func (s *Snapshot) AddRecord(rel string, b []byte, version uint64) error {
	if rel == FrozenKey {
		f, err := parseFrozen(b)
		if err != nil {
			return err
		}
		s.Frozen, s.FrozenVersion = f, version
		return nil
	}
	seg, ok := strings.CutPrefix(rel, HoldersDir)
	if !ok || seg == "" || strings.Contains(seg, "/") {
		return nil
	}
	id, err := url.QueryUnescape(seg)
	if err != nil {
		return nil
	}
	h, err := parseHolder(id, b)
	if err != nil {
		return err
	}
	if s.Meta == nil {
		s.Meta = map[string]plugins.Holder{}
	}
	s.Meta[id] = h
	return nil
}

// State builds the public view: the semaphore's ids merged with metadata.
// Ids without metadata (written by airlock or a FleetLock client) carry only
// their ID.
func (s Snapshot) State(group string) plugins.LockState {
	st := plugins.LockState{Group: group, Holders: []plugins.Holder{}, Revision: s.Revision}
	st.Slots = int(s.Slots())
	if s.Sem != nil {
		for _, id := range s.Sem.Holders {
			h, ok := s.Meta[id]
			if !ok {
				h = plugins.Holder{ID: id}
			}
			st.Holders = append(st.Holders, h)
		}
	}
	if s.Frozen != nil {
		st.Frozen = true
		st.FrozenReason = s.Frozen.Reason
		st.FrozenBy = s.Frozen.By
		st.FrozenAt = s.Frozen.At
	}
	return st
}

// Plan is what an Acquire must write, decided from a Snapshot.
type Plan struct {
	Granted bool
	// Frozen: refused because the group is frozen; nothing is written and
	// the caller reports a refusal whose state shows the freeze.
	Frozen bool
	// Sem is the new semaphore to CAS in; nil leaves it untouched (a holder
	// refreshing its record, or a refusal).
	Sem *Value
	// Holder is the metadata to store for the requester when Granted.
	Holder plugins.Holder
	// Reclaimed are stale holders removed by this write; their metadata is
	// deleted and an Event recorded for each.
	Reclaimed []plugins.Holder
	// CheckNotFrozen: the write must fail if a freeze marker appeared since
	// the read (set whenever a new holder is added).
	CheckNotFrozen bool
	// Refresh: the requester already holds a slot; only its record is
	// rewritten.
	Refresh bool
}

// Writes reports whether the plan changes anything.
func (p Plan) Writes() bool { return p.Sem != nil || p.Granted }

// Apply returns the snapshot after p is applied to s and landed at
// revision.
func (p Plan) Apply(s Snapshot, revision uint64) Snapshot {
	out := s
	out.Revision = revision
	out.Meta = make(map[string]plugins.Holder, len(s.Meta)+1)
	maps.Copy(out.Meta, s.Meta)
	if p.Sem != nil {
		out.Sem = p.Sem
	}
	for _, r := range p.Reclaimed {
		delete(out.Meta, r.ID)
	}
	if p.Granted {
		out.Meta[p.Holder.ID] = p.Holder
	}
	return out
}

// Decide plans an Acquire. now is req.Now or the locker's clock. The
// request's group and holder are assumed valid (see Ops.Acquire).
//
// Rules: an existing holder is granted again and its record refreshed, even
// in a frozen group, if plugins.SameNode says the stored record is its own;
// a record written by another machine under the same id is a collision
// (ErrNodeIDCollision), unless the request may reclaim it as stale, which
// then happens as for any stale holder. A frozen group grants nobody new and
// reclaims nothing. With ReclaimStale, every holder whose Deadline is set
// and not after now is removed, whether or not the requester then fits. A
// new holder is added only while the holders number fewer than
// total_slots.
func Decide(s Snapshot, req plugins.AcquireRequest, now time.Time) (Plan, error) {
	id := req.Holder.ID
	h := req.Holder
	if s.Sem != nil && s.Sem.Has(id) {
		old, ok := s.Meta[id]
		var collision error
		if ok {
			collision = plugins.SameNode(old, h, req.PreviousBootID)
		}
		if collision == nil {
			if h.AcquiredAt.IsZero() {
				h.AcquiredAt = now
				if ok && !old.AcquiredAt.IsZero() {
					h.AcquiredAt = old.AcquiredAt
				}
			}
			return Plan{Granted: true, Refresh: true, Holder: h}, nil
		}
		if !stale(old, req, now, s.Frozen != nil) {
			return Plan{}, collision
		}
		// Another machine's record, past its deadline: reclaimed below
		// like any stale holder.
	}
	if s.Frozen != nil {
		return Plan{Frozen: true}, nil
	}
	if h.AcquiredAt.IsZero() {
		h.AcquiredAt = now
	}
	var sem *Value
	if s.Sem == nil {
		if req.Slots < 1 {
			return Plan{}, fmt.Errorf("%w: group %q has no semaphore yet and the request asks for %d slots", plugins.ErrInvalidArgument, req.Group, req.Slots)
		}
		sem = New(uint64(req.Slots))
	} else {
		sem = s.Sem.Clone()
	}
	var p Plan
	if req.ReclaimStale && s.Sem != nil {
		// sem is a clone, so the snapshot's list is safe to range over.
		for _, hid := range s.Sem.Holders {
			m, ok := s.Meta[hid]
			if !ok || !stale(m, req, now, false) {
				continue
			}
			sem.Remove(hid)
			p.Reclaimed = append(p.Reclaimed, m)
		}
	}
	if uint64(len(sem.Holders)) < sem.TotalSlots {
		sem.Add(id)
		p.Granted = true
		p.Holder = h
		p.CheckNotFrozen = true
	}
	if p.Granted || len(p.Reclaimed) > 0 || s.Sem == nil {
		p.Sem = sem
	}
	return p, nil
}

// stale reports whether the request may reclaim holder record m: it asks
// to, the record has a deadline that is not after now, and the group is not
// frozen.
func stale(m plugins.Holder, req plugins.AcquireRequest, now time.Time, frozen bool) bool {
	return req.ReclaimStale && !frozen && !m.Deadline.IsZero() && !now.Before(m.Deadline)
}

// staleReason is the event reason for a reclaimed holder.
func staleReason(h plugins.Holder, now time.Time) string {
	return fmt.Sprintf("stale: deadline %s passed (now %s)", h.Deadline.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
}
