package gpt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
	"unicode/utf16"
)

// Sentinel errors callers branch on.
var (
	// ErrNoGPT: neither header carries the "EFI PART" signature.
	ErrNoGPT = errors.New("no GPT found")
	// ErrCorrupt: a GPT is there but no copy of it is usable, or its
	// entries are inconsistent (overlapping, outside the usable area).
	ErrCorrupt = errors.New("GPT is corrupt")
	// ErrInvalidArgument: a bad partition index, attribute value, GUID,
	// key or option.
	ErrInvalidArgument = errors.New("invalid argument")
)

const (
	gptSignature    = "EFI PART"
	gptRevision1    = 0x00010000
	headerMinSize   = 92
	entryMinSize    = 128
	nameUnits       = 36
	maxEntriesBytes = 4 << 20 // far above the usual 16 KiB; bounds memory for hostile input

	// gptprio attribute bits (CoreOS/ChromeOS), in the 64-bit attribute field.
	prioShift      = 48
	triesShift     = 52
	successfulBit  = 56
	prioTriesMask  = 0xf
	entryAttrOff   = 48
	maxPrioOrTries = 15
)

// Header is one decoded GPT header (primary or backup).
type Header struct {
	Revision       uint32
	HeaderSize     uint32
	HeaderCRC      uint32
	MyLBA          uint64
	AlternateLBA   uint64
	FirstUsableLBA uint64
	LastUsableLBA  uint64
	DiskGUID       GUID
	EntriesLBA     uint64
	NumEntries     uint32
	EntrySize      uint32
	EntriesCRC     uint32
}

func decodeHeader(b []byte) Header {
	le := binary.LittleEndian
	var h Header
	h.Revision = le.Uint32(b[8:])
	h.HeaderSize = le.Uint32(b[12:])
	h.HeaderCRC = le.Uint32(b[16:])
	h.MyLBA = le.Uint64(b[24:])
	h.AlternateLBA = le.Uint64(b[32:])
	h.FirstUsableLBA = le.Uint64(b[40:])
	h.LastUsableLBA = le.Uint64(b[48:])
	copy(h.DiskGUID[:], b[56:72])
	h.EntriesLBA = le.Uint64(b[72:])
	h.NumEntries = le.Uint32(b[80:])
	h.EntrySize = le.Uint32(b[84:])
	h.EntriesCRC = le.Uint32(b[88:])
	return h
}

// putHeader stores h into raw (one sector) and recomputes the header CRC
// over HeaderSize bytes with the CRC field zeroed. Bytes it does not own
// (reserved space, the rest of the sector) are left as they were, so an
// unchanged header re-encodes to the same bytes.
func putHeader(raw []byte, h Header) {
	le := binary.LittleEndian
	copy(raw[0:8], gptSignature)
	le.PutUint32(raw[8:], h.Revision)
	le.PutUint32(raw[12:], h.HeaderSize)
	le.PutUint32(raw[16:], 0)
	le.PutUint64(raw[24:], h.MyLBA)
	le.PutUint64(raw[32:], h.AlternateLBA)
	le.PutUint64(raw[40:], h.FirstUsableLBA)
	le.PutUint64(raw[48:], h.LastUsableLBA)
	copy(raw[56:72], h.DiskGUID[:])
	le.PutUint64(raw[72:], h.EntriesLBA)
	le.PutUint32(raw[80:], h.NumEntries)
	le.PutUint32(raw[84:], h.EntrySize)
	le.PutUint32(raw[88:], h.EntriesCRC)
	le.PutUint32(raw[16:], headerCRC(raw, h.HeaderSize))
}

func headerCRC(raw []byte, size uint32) uint32 {
	c := crc32.NewIEEE()
	c.Write(raw[:16])
	c.Write([]byte{0, 0, 0, 0})
	c.Write(raw[20:size])
	return c.Sum32()
}

// sameLayout reports whether two headers describe the same table, apart
// from the fields that say where each copy lives.
func sameLayout(a, b Header) bool {
	return a.Revision == b.Revision && a.HeaderSize == b.HeaderSize &&
		a.FirstUsableLBA == b.FirstUsableLBA && a.LastUsableLBA == b.LastUsableLBA &&
		a.DiskGUID == b.DiskGUID && a.NumEntries == b.NumEntries &&
		a.EntrySize == b.EntrySize && a.EntriesCRC == b.EntriesCRC
}

// Partition is one used entry of the table.
type Partition struct {
	Index      int  // 1-based entry number, as sgdisk and cgpt count
	Type       GUID // partition type
	ID         GUID // unique partition GUID (PARTUUID)
	FirstLBA   uint64
	LastLBA    uint64
	Attributes uint64
	Name       string
}

// Priority is the gptprio priority (bits 48–51); 0 means never boot.
func (p Partition) Priority() int { return int(p.Attributes >> prioShift & prioTriesMask) }

// Tries is the gptprio boot attempts left (bits 52–55).
func (p Partition) Tries() int { return int(p.Attributes >> triesShift & prioTriesMask) }

// Successful is the gptprio "booted and marked good" bit (56).
func (p Partition) Successful() bool { return p.Attributes>>successfulBit&1 == 1 }

// Bootable reports whether gptprio may choose p: a priority above zero and
// either attempts left or a successful boot behind it.
func (p Partition) Bootable() bool {
	return p.Priority() > 0 && (p.Tries() > 0 || p.Successful())
}

// Sectors is the partition length in sectors.
func (p Partition) Sectors() uint64 { return p.LastLBA - p.FirstLBA + 1 }

func decodeEntry(b []byte, index int) Partition {
	le := binary.LittleEndian
	p := Partition{Index: index}
	copy(p.Type[:], b[0:16])
	copy(p.ID[:], b[16:32])
	p.FirstLBA = le.Uint64(b[32:])
	p.LastLBA = le.Uint64(b[40:])
	p.Attributes = le.Uint64(b[48:])
	units := make([]uint16, 0, nameUnits)
	for i := range nameUnits {
		u := le.Uint16(b[56+2*i:])
		if u == 0 {
			break
		}
		units = append(units, u)
	}
	p.Name = string(utf16.Decode(units))
	return p
}

// headerCopy is one of the two on-disk copies with its entry array.
type headerCopy struct {
	raw     []byte // the whole header sector as read
	h       Header
	entries []byte
	err     error // why this copy is not usable; nil when it is
}

// Table is a parsed GPT. The primary copy is authoritative when valid;
// otherwise the backup is. Writes always refresh both copies.
type Table struct {
	SectorSize int
	Sectors    uint64 // number of LBAs on the disk

	pmbr    []byte
	hdr     Header // authoritative header (its location fields are its own copy's)
	primary headerCopy
	backup  headerCopy
	entries []byte // authoritative entry array
}

// Parse reads a GPT from r, a disk or image of size bytes. sectorSize 0
// detects 512 or 4096 from where the signature is found.
func Parse(r io.ReaderAt, size int64, sectorSize int) (*Table, error) {
	if sectorSize == 0 {
		sectorSize = detectSectorSize(r, size)
	}
	if sectorSize < 512 || sectorSize > 4096 || sectorSize&(sectorSize-1) != 0 {
		return nil, fmt.Errorf("%w: sector size %d", ErrInvalidArgument, sectorSize)
	}
	ss := int64(sectorSize)
	if size < 3*ss {
		return nil, fmt.Errorf("%w: disk of %d bytes is too small for a GPT", ErrNoGPT, size)
	}
	t := &Table{SectorSize: sectorSize, Sectors: uint64(size / ss)}
	t.pmbr = make([]byte, sectorSize)
	if _, err := r.ReadAt(t.pmbr, 0); err != nil {
		return nil, fmt.Errorf("read protective MBR: %w", err)
	}
	t.primary = t.readCopy(r, 1, true)
	if t.primary.err == nil {
		t.backup = t.readCopy(r, t.primary.h.AlternateLBA, false)
	} else {
		t.backup = t.readCopy(r, t.Sectors-1, false)
	}
	switch {
	case t.primary.err == nil:
		t.hdr, t.entries = t.primary.h, t.primary.entries
		if t.backup.err == nil && (!sameLayout(t.primary.h, t.backup.h) || !bytes.Equal(t.primary.entries, t.backup.entries)) {
			t.backup.err = errors.New("backup differs from primary")
		}
	case t.backup.err == nil:
		t.hdr, t.entries = t.backup.h, t.backup.entries
	default:
		sentinel := ErrCorrupt
		if !hasSignature(t.primary.raw) && !hasSignature(t.backup.raw) {
			sentinel = ErrNoGPT
		}
		return nil, fmt.Errorf("%w: primary header: %w; backup header: %w", sentinel, t.primary.err, t.backup.err)
	}
	if err := t.checkEntries(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return t, nil
}

func hasSignature(raw []byte) bool {
	return len(raw) >= 8 && string(raw[:8]) == gptSignature
}

func detectSectorSize(r io.ReaderAt, size int64) int {
	sig := make([]byte, 8)
	for _, ss := range []int64{512, 4096} {
		if _, err := r.ReadAt(sig, ss); err == nil && string(sig) == gptSignature {
			return int(ss)
		}
	}
	for _, ss := range []int64{512, 4096} {
		if size >= 2*ss {
			if _, err := r.ReadAt(sig, size/ss*ss-ss); err == nil && string(sig) == gptSignature {
				return int(ss)
			}
		}
	}
	return 512
}

// readCopy reads and validates the header at lba and its entry array.
func (t *Table) readCopy(r io.ReaderAt, lba uint64, primary bool) headerCopy {
	ss := uint64(t.SectorSize)
	c := headerCopy{}
	if lba >= t.Sectors {
		c.err = fmt.Errorf("header LBA %d beyond the last LBA %d", lba, t.Sectors-1)
		return c
	}
	c.raw = make([]byte, ss)
	if _, err := r.ReadAt(c.raw, int64(lba*ss)); err != nil {
		c.err = fmt.Errorf("read LBA %d: %w", lba, err)
		return c
	}
	if !hasSignature(c.raw) {
		c.err = fmt.Errorf("no signature at LBA %d", lba)
		return c
	}
	h := decodeHeader(c.raw)
	c.h = h
	if err := t.checkHeader(c.raw, h, lba, primary); err != nil {
		c.err = fmt.Errorf("LBA %d: %w", lba, err)
		return c
	}
	n := uint64(h.NumEntries) * uint64(h.EntrySize)
	c.entries = make([]byte, n)
	if _, err := r.ReadAt(c.entries, int64(h.EntriesLBA*ss)); err != nil {
		c.err = fmt.Errorf("read entries at LBA %d: %w", h.EntriesLBA, err)
		c.entries = nil
		return c
	}
	if got := crc32.ChecksumIEEE(c.entries); got != h.EntriesCRC {
		c.err = fmt.Errorf("entry array CRC %08x, header says %08x", got, h.EntriesCRC)
		c.entries = nil
	}
	return c
}

func (t *Table) entrySectors(h Header) uint64 {
	ss := uint64(t.SectorSize)
	return (uint64(h.NumEntries)*uint64(h.EntrySize) + ss - 1) / ss
}

// checkHeader validates one header read at lba, without its entries.
func (t *Table) checkHeader(raw []byte, h Header, lba uint64, primary bool) error {
	switch {
	case h.Revision != gptRevision1:
		return fmt.Errorf("revision %#08x, want %#08x", h.Revision, gptRevision1)
	case h.HeaderSize < headerMinSize || h.HeaderSize > uint32(t.SectorSize):
		return fmt.Errorf("header size %d", h.HeaderSize)
	}
	if got := headerCRC(raw, h.HeaderSize); got != h.HeaderCRC {
		return fmt.Errorf("header CRC %08x, header says %08x", got, h.HeaderCRC)
	}
	return t.checkHeaderFields(h, lba, primary)
}

func (t *Table) checkHeaderFields(h Header, lba uint64, primary bool) error {
	last := t.Sectors - 1
	switch {
	case h.MyLBA != lba:
		return fmt.Errorf("my_lba %d, read at %d", h.MyLBA, lba)
	case h.EntrySize < entryMinSize || h.EntrySize%entryMinSize != 0 || h.EntrySize&(h.EntrySize-1) != 0:
		return fmt.Errorf("entry size %d", h.EntrySize)
	case h.NumEntries == 0 || uint64(h.NumEntries)*uint64(h.EntrySize) > maxEntriesBytes:
		return fmt.Errorf("%d entries of %d bytes", h.NumEntries, h.EntrySize)
	case h.FirstUsableLBA > h.LastUsableLBA || h.LastUsableLBA >= last:
		return fmt.Errorf("usable LBAs %d..%d on a disk of %d LBAs", h.FirstUsableLBA, h.LastUsableLBA, t.Sectors)
	}
	es := t.entrySectors(h)
	if primary {
		switch {
		case h.MyLBA != 1:
			return fmt.Errorf("primary header at LBA %d", h.MyLBA)
		case h.AlternateLBA <= h.LastUsableLBA || h.AlternateLBA > last:
			return fmt.Errorf("alternate_lba %d outside %d..%d", h.AlternateLBA, h.LastUsableLBA+1, last)
		case h.EntriesLBA < 2 || h.EntriesLBA > h.FirstUsableLBA || h.FirstUsableLBA-h.EntriesLBA < es:
			return fmt.Errorf("entries at LBA %d (+%d) overlap the usable area from %d", h.EntriesLBA, es, h.FirstUsableLBA)
		}
		return nil
	}
	switch {
	case h.AlternateLBA != 1:
		return fmt.Errorf("backup alternate_lba %d, want 1", h.AlternateLBA)
	case h.MyLBA <= h.LastUsableLBA:
		return fmt.Errorf("backup header at LBA %d inside the usable area", h.MyLBA)
	case h.EntriesLBA <= h.LastUsableLBA || h.EntriesLBA > h.MyLBA || h.MyLBA-h.EntriesLBA < es:
		return fmt.Errorf("backup entries at LBA %d (+%d) not between the usable area and the header", h.EntriesLBA, es)
	}
	return nil
}

// checkEntries rejects used entries that are inverted, outside the usable
// area or overlapping: data written to such a partition could land on the
// GPT or on another partition.
func (t *Table) checkEntries() error {
	type span struct {
		first, last uint64
		index       int
	}
	var spans []span
	for _, p := range t.Partitions() {
		switch {
		case p.FirstLBA > p.LastLBA:
			return fmt.Errorf("partition %d ends (LBA %d) before it starts (LBA %d)", p.Index, p.LastLBA, p.FirstLBA)
		case p.FirstLBA < t.hdr.FirstUsableLBA || p.LastLBA > t.hdr.LastUsableLBA:
			return fmt.Errorf("partition %d (LBA %d..%d) outside the usable area %d..%d", p.Index, p.FirstLBA, p.LastLBA, t.hdr.FirstUsableLBA, t.hdr.LastUsableLBA)
		}
		spans = append(spans, span{p.FirstLBA, p.LastLBA, p.Index})
	}
	slices.SortFunc(spans, func(a, b span) int { return cmpUint64(a.first, b.first) })
	for i := 1; i < len(spans); i++ {
		if spans[i].first <= spans[i-1].last {
			return fmt.Errorf("partitions %d and %d overlap", spans[i-1].index, spans[i].index)
		}
	}
	return nil
}

func cmpUint64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Header returns the authoritative header (the primary's when it is valid).
func (t *Table) Header() Header { return t.hdr }

// Partitions returns the used entries in table order.
func (t *Table) Partitions() []Partition {
	var out []Partition
	es := int(t.hdr.EntrySize)
	for i := range int(t.hdr.NumEntries) {
		b := t.entries[i*es : (i+1)*es]
		if GUID(b[0:16]).IsZero() {
			continue
		}
		out = append(out, decodeEntry(b, i+1))
	}
	return out
}

// Partition returns the used entry with the 1-based index.
func (t *Table) Partition(index int) (Partition, error) {
	if index < 1 || index > int(t.hdr.NumEntries) {
		return Partition{}, fmt.Errorf("%w: partition %d outside 1..%d", ErrInvalidArgument, index, t.hdr.NumEntries)
	}
	es := int(t.hdr.EntrySize)
	b := t.entries[(index-1)*es : index*es]
	if GUID(b[0:16]).IsZero() {
		return Partition{}, fmt.Errorf("%w: partition %d is unused", ErrInvalidArgument, index)
	}
	return decodeEntry(b, index), nil
}

// SetPrio sets the gptprio fields of partition index, leaving every other
// attribute bit alone: the same change as `cgpt add -i index -P priority -T
// tries -S successful`. It changes the table in memory only.
func (t *Table) SetPrio(index, priority, tries int, successful bool) error {
	if _, err := t.Partition(index); err != nil {
		return err
	}
	if priority < 0 || priority > maxPrioOrTries || tries < 0 || tries > maxPrioOrTries {
		return fmt.Errorf("%w: priority %d / tries %d outside 0..15", ErrInvalidArgument, priority, tries)
	}
	off := (index-1)*int(t.hdr.EntrySize) + entryAttrOff
	a := binary.LittleEndian.Uint64(t.entries[off:])
	a &^= prioTriesMask<<prioShift | prioTriesMask<<triesShift | 1<<successfulBit
	a |= uint64(priority)<<prioShift | uint64(tries)<<triesShift
	if successful {
		a |= 1 << successfulBit
	}
	binary.LittleEndian.PutUint64(t.entries[off:], a)
	return nil
}

// HasProtectiveMBR reports whether LBA 0 carries an MBR with a 0xEE entry.
func (t *Table) HasProtectiveMBR() bool {
	if len(t.pmbr) < 512 || t.pmbr[510] != 0x55 || t.pmbr[511] != 0xAA {
		return false
	}
	for i := range 4 {
		if t.pmbr[446+16*i+4] == 0xEE {
			return true
		}
	}
	return false
}

// Problems lists what a write would repair or what is unusual; empty for a
// healthy table.
func (t *Table) Problems() []string {
	var out []string
	if t.primary.err != nil {
		out = append(out, "primary GPT unusable, using backup: "+t.primary.err.Error())
	}
	if t.backup.err != nil {
		out = append(out, "backup GPT unusable: "+t.backup.err.Error())
	}
	if !t.HasProtectiveMBR() {
		out = append(out, "no protective MBR at LBA 0")
	}
	return out
}

// PrimaryValid and BackupValid report whether each copy was usable as read.
func (t *Table) PrimaryValid() bool { return t.primary.err == nil }
func (t *Table) BackupValid() bool  { return t.backup.err == nil }

// sectorWrite is one contiguous write of a table update.
type sectorWrite struct {
	off  int64
	data []byte
	sync bool // fsync after this write
}

// plan encodes both copies with fresh CRCs, backup first. A copy that was
// unusable is rebuilt from the other at its standard place.
func (t *Table) plan() ([]sectorWrite, headerCopy, headerCopy, error) {
	ss := uint64(t.SectorSize)
	crc := crc32.ChecksumIEEE(t.entries)
	es := t.entrySectors(t.hdr)

	var prim, back headerCopy
	if t.primary.err == nil {
		prim = headerCopy{raw: slices.Clone(t.primary.raw), h: t.primary.h}
	} else {
		prim = headerCopy{raw: slices.Clone(t.backup.raw), h: t.backup.h}
		prim.h.MyLBA, prim.h.AlternateLBA, prim.h.EntriesLBA = 1, t.backup.h.MyLBA, 2
		if 2+es > prim.h.FirstUsableLBA {
			return nil, prim, back, fmt.Errorf("%w: no room for the primary entry array before LBA %d", ErrCorrupt, prim.h.FirstUsableLBA)
		}
	}
	if t.backup.err == nil {
		back = headerCopy{raw: slices.Clone(t.backup.raw), h: t.backup.h}
	} else {
		back = headerCopy{raw: slices.Clone(t.primary.raw), h: t.primary.h}
		back.h.MyLBA, back.h.AlternateLBA = t.primary.h.AlternateLBA, 1
		back.h.EntriesLBA = back.h.MyLBA - es
		if back.h.EntriesLBA <= back.h.LastUsableLBA {
			return nil, prim, back, fmt.Errorf("%w: no room for the backup entry array after LBA %d", ErrCorrupt, back.h.LastUsableLBA)
		}
	}
	prim.h.EntriesCRC, back.h.EntriesCRC = crc, crc
	putHeader(prim.raw, prim.h)
	putHeader(back.raw, back.h)
	prim.h.HeaderCRC = decodeHeader(prim.raw).HeaderCRC
	back.h.HeaderCRC = decodeHeader(back.raw).HeaderCRC
	prim.entries, back.entries = slices.Clone(t.entries), slices.Clone(t.entries)

	return []sectorWrite{
		{off: int64(back.h.EntriesLBA * ss), data: back.entries},
		{off: int64(back.h.MyLBA * ss), data: back.raw, sync: true},
		{off: int64(prim.h.EntriesLBA * ss), data: prim.entries},
		{off: int64(prim.h.MyLBA * ss), data: prim.raw, sync: true},
	}, prim, back, nil
}

// syncWriterAt is what a table write needs from a disk or image file.
type syncWriterAt interface {
	io.WriterAt
	Sync() error
}

// Write stores the table on w: the backup entry array and header, fsync,
// then the primary entry array and header, fsync. A crash between the two
// leaves the old primary intact, which Parse prefers.
func (t *Table) Write(w syncWriterAt) error {
	writes, prim, back, err := t.plan()
	if err != nil {
		return err
	}
	for _, sw := range writes {
		if _, err := w.WriteAt(sw.data, sw.off); err != nil {
			return fmt.Errorf("write GPT at byte %d: %w", sw.off, err)
		}
		if sw.sync {
			if err := w.Sync(); err != nil {
				return fmt.Errorf("sync GPT: %w", err)
			}
		}
	}
	t.primary, t.backup, t.hdr = prim, back, prim.h
	return nil
}
