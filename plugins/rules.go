package plugins

import (
	"fmt"
	"strconv"
	"unicode"
	"unicode/utf8"
)

// MaxNameLen bounds group names, node ids and the text fields of a holder
// record.
const MaxNameLen = 253

// ValidateName checks a group name or node id: non-empty, at most
// MaxNameLen bytes of UTF-8, printable, without spaces. The error wraps
// ErrInvalidArgument and shows s escaped.
func ValidateName(kind, s string) error {
	if s == "" {
		return fmt.Errorf("%w: empty %s", ErrInvalidArgument, kind)
	}
	if err := validateText(kind, s); err != nil {
		return err
	}
	for _, r := range s {
		if unicode.IsSpace(r) {
			return fmt.Errorf("%w: %s %s contains a space", ErrInvalidArgument, kind, strconv.Quote(s))
		}
	}
	return nil
}

// validateText checks a free text field of a holder record: at most
// MaxNameLen bytes of UTF-8 without control or other unprintable
// characters (spaces are fine). Such characters in a record would forge
// lines of an operator's output or drive the terminal.
func validateText(kind, s string) error {
	if len(s) > MaxNameLen {
		return fmt.Errorf("%w: %s longer than %d bytes", ErrInvalidArgument, kind, MaxNameLen)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: %s %s is not valid UTF-8", ErrInvalidArgument, kind, strconv.Quote(s))
	}
	for _, r := range s {
		if r != ' ' && !unicode.IsPrint(r) {
			return fmt.Errorf("%w: %s %s contains a control or unprintable character (%U)", ErrInvalidArgument, kind, strconv.QuoteToASCII(s), r)
		}
	}
	return nil
}

// ValidateHolder checks what a node says about itself in an AcquireRequest:
// its id (ValidateName) and the hostname, boot id, version and metadata it
// records, which must be printable text. Lockers refuse a request that
// fails it, before they store anything.
func ValidateHolder(h Holder) error {
	if err := ValidateName("holder id", h.ID); err != nil {
		return err
	}
	for kind, v := range map[string]string{"hostname": h.Hostname, "boot id": h.BootID, "version": h.Version} {
		if err := validateText(kind, v); err != nil {
			return err
		}
	}
	for k, v := range h.Meta {
		if err := validateText("metadata key", k); err != nil {
			return err
		}
		if err := validateText("metadata "+strconv.Quote(k), v); err != nil {
			return err
		}
	}
	return nil
}

// ValidateAcquire checks an AcquireRequest's group, holder and previous
// boot id.
func ValidateAcquire(req AcquireRequest) error {
	if err := ValidateName("group", req.Group); err != nil {
		return err
	}
	if err := ValidateHolder(req.Holder); err != nil {
		return err
	}
	return validateText("previous boot id", req.PreviousBootID)
}

// SameNode decides whether asker, asking for a slot with the boot id it had
// before (previousBootID, may be empty), is the node that wrote held, the
// live holder record stored for the same id. It returns nil for the same
// node and an error wrapping ErrNodeIDCollision otherwise.
//
// The rule: a record is the asker's when its boot id is the asker's current
// boot id or the asker's previous one (a node that rebooted while holding
// its slot), and its hostname is the asker's. A boot id is random per boot,
// so another machine never has it; a clone of a golden image has the same
// node id and often the same hostname, but never the same boot id. When
// either side records no boot id or no hostname (a record written by
// airlock or a plain FleetLock client), that part cannot be compared and
// does not count against the asker.
func SameNode(held, asker Holder, previousBootID string) error {
	bootOK := held.BootID == "" || asker.BootID == "" || held.BootID == asker.BootID ||
		(previousBootID != "" && held.BootID == previousBootID)
	hostOK := held.Hostname == "" || asker.Hostname == "" || held.Hostname == asker.Hostname
	if bootOK && hostOK {
		return nil
	}
	return fmt.Errorf("%w: id %s is held by host %s (boot %s) and asked for by host %s (boot %s); two machines share this node id (a cloned /etc/machine-id?)",
		ErrNodeIDCollision, strconv.QuoteToASCII(held.ID), orUnknown(held.Hostname), orUnknown(held.BootID), orUnknown(asker.Hostname), orUnknown(asker.BootID))
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return strconv.QuoteToASCII(s)
}
