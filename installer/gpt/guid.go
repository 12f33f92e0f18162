package gpt

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
)

// GUID is a GPT GUID in its on-disk byte order: the first three fields are
// little-endian, the last eight bytes are stored as written.
type GUID [16]byte

// USRType is the partition type GUID of Flatcar/CoreOS /usr partitions
// (USR-A and USR-B).
var USRType = GUID{0xf4, 0xf5, 0xfb, 0x5d, 0x48, 0x28, 0xac, 0x4b, 0xaa, 0x5e, 0x0d, 0x9a, 0x20, 0xb7, 0x45, 0xa6}

// ParseGUID reads the textual form "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"
// (any case, optional braces).
func ParseGUID(s string) (GUID, error) {
	var g GUID
	t := strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(s), "{"), "}")
	if len(t) != 36 || t[8] != '-' || t[13] != '-' || t[18] != '-' || t[23] != '-' {
		return g, fmt.Errorf("%w: %q is not a GUID", ErrInvalidArgument, s)
	}
	var b [16]byte
	if _, err := hex.Decode(b[:], []byte(t[0:8]+t[9:13]+t[14:18]+t[19:23]+t[24:36])); err != nil {
		return g, fmt.Errorf("%w: %q is not a GUID: %w", ErrInvalidArgument, s, err)
	}
	binary.LittleEndian.PutUint32(g[0:4], binary.BigEndian.Uint32(b[0:4]))
	binary.LittleEndian.PutUint16(g[4:6], binary.BigEndian.Uint16(b[4:6]))
	binary.LittleEndian.PutUint16(g[6:8], binary.BigEndian.Uint16(b[6:8]))
	copy(g[8:], b[8:])
	return g, nil
}

// String returns the lower-case textual form, as /dev/disk/by-partuuid and
// the kernel command line use it.
func (g GUID) String() string {
	return fmt.Sprintf("%08x-%04x-%04x-%x-%x",
		binary.LittleEndian.Uint32(g[0:4]),
		binary.LittleEndian.Uint16(g[4:6]),
		binary.LittleEndian.Uint16(g[6:8]),
		g[8:10], g[10:16])
}

// IsZero reports whether g is all zeros (an unused entry's type).
func (g GUID) IsZero() bool { return g == GUID{} }
