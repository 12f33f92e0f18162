package gpt

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unicode/utf16"
)

// Layout of the test image, modelled on Flatcar's numbering: the A/B pair
// is 3/4 and ROOT is 9, so entry indices are not contiguous.
const (
	imgSize    = 64 << 20
	idxEFI     = 1
	idxBIOS    = 2
	idxA       = 3
	idxB       = 4
	idxRoot    = 9
	usrTypeStr = "5dfbf5f4-2848-4bac-aa5e-0d9a20b745a6"
)

func requireTools(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			t.Skipf("%s not installed (Debian packages gdisk and cgpt); CI installs it", n)
		}
	}
}

// run executes argv (no shell) and returns its combined output.
func run(t testing.TB, argv ...string) string {
	t.Helper()
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	return string(out)
}

// newImage builds a 64 MiB Flatcar-like disk image with sgdisk. USR-A is
// the booted, good slot (priority 1, successful), USR-B is empty.
func newImage(t testing.TB) string {
	t.Helper()
	requireTools(t, "sgdisk", "cgpt")
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, imgSize); err != nil {
		t.Fatal(err)
	}
	run(t, "sgdisk",
		"-n", "1:2048:+8M", "-t", "1:EF00", "-c", "1:EFI-SYSTEM",
		"-n", "2:0:+1M", "-t", "2:EF02", "-c", "2:BIOS-BOOT",
		"-n", "3:0:+16M", "-t", "3:"+usrTypeStr, "-c", "3:USR-A",
		"-n", "4:0:+16M", "-t", "4:"+usrTypeStr, "-c", "4:USR-B",
		"-n", "9:0:0", "-t", "9:8300", "-c", "9:ROOT",
		img)
	cgptAdd(t, img, idxA, 1, 0, 1)
	return img
}

func cgptAdd(t testing.TB, img string, idx, p, tries, s int) {
	t.Helper()
	run(t, "cgpt", "add", "-i", strconv.Itoa(idx), "-P", strconv.Itoa(p), "-T", strconv.Itoa(tries), "-S", strconv.Itoa(s), img)
}

// cgptShow reads priority, tries and successful of a partition with cgpt.
func cgptShow(t testing.TB, img string, idx int) (p, tries, s int) {
	t.Helper()
	get := func(flag string) int {
		out := strings.TrimSpace(run(t, "cgpt", "show", "-i", strconv.Itoa(idx), flag, img))
		v, err := strconv.Atoi(out)
		if err != nil {
			t.Fatalf("cgpt show %s: %q", flag, out)
		}
		return v
	}
	return get("-P"), get("-T"), get("-S")
}

func wantCgpt(t testing.TB, img string, idx, p, tries, s int) {
	t.Helper()
	gp, gt, gs := cgptShow(t, img, idx)
	if gp != p || gt != tries || gs != s {
		t.Errorf("cgpt show -i %d: P%d T%d S%d, want P%d T%d S%d", idx, gp, gt, gs, p, tries, s)
	}
}

// sgdiskClean fails the test unless `sgdisk -v` finds no problems.
func sgdiskClean(t testing.TB, img string) {
	t.Helper()
	out := run(t, "sgdisk", "-v", img)
	if !strings.Contains(out, "No problems found") {
		t.Errorf("sgdisk -v %s:\n%s", img, out)
	}
}

// sgdiskAttrs returns the attribute flags sgdisk -i reports, in hex.
func sgdiskAttrs(t testing.TB, img string, idx int) string {
	t.Helper()
	out := run(t, "sgdisk", "-i", strconv.Itoa(idx), img)
	for l := range strings.Lines(out) {
		if v, ok := strings.CutPrefix(l, "Attribute flags: "); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no attribute flags in sgdisk -i %d:\n%s", idx, out)
	return ""
}

func copyFile(t testing.TB, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), filepath.Base(src))
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return dst
}

func readFile(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sameFile fails unless two files are byte-identical, naming the first
// difference.
func sameFile(t testing.TB, got, want string) {
	t.Helper()
	a, b := readFile(t, got), readFile(t, want)
	if len(a) != len(b) {
		t.Fatalf("%s is %d bytes, %s is %d", got, len(a), want, len(b))
	}
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("files differ first at byte %d (LBA %d, offset %d): %#02x vs %#02x", i, i/512, i%512, a[i], b[i])
		}
	}
}

// tableArea returns the bytes holding the GPT: LBA 0 up to the first usable
// LBA and everything after the last usable LBA (512-byte sectors).
func tableArea(t testing.TB, img string) []byte {
	t.Helper()
	b := readFile(t, img)
	tbl, err := Parse(bytes.NewReader(b), int64(len(b)), 0)
	if err != nil {
		t.Fatalf("parse %s: %v", img, err)
	}
	h := tbl.Header()
	ss := uint64(tbl.SectorSize)
	out := bytes.Clone(b[:h.FirstUsableLBA*ss])
	return append(out, b[(h.LastUsableLBA+1)*ss:]...)
}

func parseFile(t testing.TB, img string) *Table {
	t.Helper()
	b := readFile(t, img)
	tbl, err := Parse(bytes.NewReader(b), int64(len(b)), 0)
	if err != nil {
		t.Fatalf("parse %s: %v", img, err)
	}
	return tbl
}

func part(t testing.TB, img string, idx int) Partition {
	t.Helper()
	p, err := parseFile(t, img).Partition(idx)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// memDisk is an in-memory disk that records the order of writes and syncs.
type memDisk struct {
	b      []byte
	events []string
	// failAfter makes the write with this 1-based number fail; 0 never.
	failAfter int
	writes    int
}

func (m *memDisk) WriteAt(p []byte, off int64) (int, error) {
	m.writes++
	if m.failAfter > 0 && m.writes >= m.failAfter {
		return 0, fmt.Errorf("injected write failure at byte %d", off)
	}
	if off < 0 || off+int64(len(p)) > int64(len(m.b)) {
		return 0, fmt.Errorf("write of %d bytes at %d outside disk of %d", len(p), off, len(m.b))
	}
	copy(m.b[off:], p)
	m.events = append(m.events, fmt.Sprintf("write@%d", off))
	return len(p), nil
}

func (m *memDisk) Sync() error {
	m.events = append(m.events, "sync")
	return nil
}

// testPart is a partition for buildDisk.
type testPart struct {
	index       int
	typ, id     GUID
	first, last uint64
	attrs       uint64
	name        string
}

// buildDisk lays out a GPT the way partitioning tools do (entries right
// after the primary header and right before the backup header), for
// sector sizes and shapes sgdisk cannot make on an image file.
func buildDisk(ss int, sectors uint64, numEntries uint32, parts []testPart) []byte {
	disk := make([]byte, uint64(ss)*sectors)
	const esz = 128
	entries := make([]byte, int(numEntries)*esz)
	for _, p := range parts {
		e := entries[(p.index-1)*esz:]
		copy(e[0:16], p.typ[:])
		copy(e[16:32], p.id[:])
		binary.LittleEndian.PutUint64(e[32:], p.first)
		binary.LittleEndian.PutUint64(e[40:], p.last)
		binary.LittleEndian.PutUint64(e[48:], p.attrs)
		for i, u := range utf16.Encode([]rune(p.name)) {
			binary.LittleEndian.PutUint16(e[56+2*i:], u)
		}
	}
	es := (uint64(len(entries)) + uint64(ss) - 1) / uint64(ss)
	h := Header{
		Revision: gptRevision1, HeaderSize: headerMinSize,
		MyLBA: 1, AlternateLBA: sectors - 1,
		FirstUsableLBA: 2 + es, LastUsableLBA: sectors - 2 - es,
		DiskGUID:   GUID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
		EntriesLBA: 2, NumEntries: numEntries, EntrySize: esz,
		EntriesCRC: crc32.ChecksumIEEE(entries),
	}
	putHeader(disk[ss:2*ss], h)
	copy(disk[2*ss:], entries)
	b := h
	b.MyLBA, b.AlternateLBA, b.EntriesLBA = sectors-1, 1, sectors-1-es
	putHeader(disk[(sectors-1)*uint64(ss):], b)
	copy(disk[b.EntriesLBA*uint64(ss):], entries)
	// Protective MBR covering the disk.
	mbr := disk[0:512]
	mbr[446+4] = 0xEE
	binary.LittleEndian.PutUint32(mbr[446+8:], 1)
	binary.LittleEndian.PutUint32(mbr[446+12:], uint32(min(sectors-1, 0xffffffff)))
	mbr[510], mbr[511] = 0x55, 0xAA
	return disk
}

func attrs(p, tries int, s bool) uint64 {
	a := uint64(p)<<prioShift | uint64(tries)<<triesShift
	if s {
		a |= 1 << successfulBit
	}
	return a
}

func mustGUID(t testing.TB, s string) GUID {
	t.Helper()
	g, err := ParseGUID(s)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func ctxT(t testing.TB) context.Context { return t.Context() }

func putU64(b []byte, v uint64) { binary.LittleEndian.PutUint64(b, v) }
