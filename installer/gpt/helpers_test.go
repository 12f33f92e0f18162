package gpt

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"unicode/utf16"

	"golang.org/x/sys/unix"
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

// testTemp holds files shared by the whole test binary (the template image);
// TestMain removes it.
var testTemp string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "gpt-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	testTemp = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// template builds the base image once: sgdisk calls sync(2), which is slow
// on a busy machine, so every test copies this file instead.
var template = sync.OnceValues(func() (string, error) {
	img := filepath.Join(testTemp, "template.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		return "", err
	}
	if err := os.Truncate(img, imgSize); err != nil {
		return "", err
	}
	steps := [][]string{
		{"sgdisk",
			"-n", "1:2048:+8M", "-t", "1:EF00", "-c", "1:EFI-SYSTEM",
			"-n", "2:0:+1M", "-t", "2:EF02", "-c", "2:BIOS-BOOT",
			"-n", "3:0:+16M", "-t", "3:" + usrTypeStr, "-c", "3:USR-A",
			"-n", "4:0:+16M", "-t", "4:" + usrTypeStr, "-c", "4:USR-B",
			"-n", "9:0:0", "-t", "9:8300", "-c", "9:ROOT",
			img},
		{"cgpt", "add", "-i", strconv.Itoa(idxA), "-P", "1", "-T", "0", "-S", "1", img},
	}
	for _, argv := range steps {
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			return "", fmt.Errorf("%s: %w\n%s", strings.Join(argv, " "), err, out)
		}
	}
	return img, nil
})

// newImage returns a fresh copy of a 64 MiB Flatcar-like disk image made by
// sgdisk. USR-A is the booted, good slot (priority 1, successful), USR-B
// is empty (all gptprio fields 0).
func newImage(t testing.TB) string {
	t.Helper()
	requireTools(t, "sgdisk", "cgpt")
	img, err := template()
	if err != nil {
		t.Fatal(err)
	}
	return copyFile(t, img)
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

// dataRanges lists the [start, end) byte ranges of f that hold data, so
// that 64 MiB sparse images are copied and compared at the cost of the few
// blocks the partitioning tools wrote.
func dataRanges(t testing.TB, f *os.File) [][2]int64 {
	t.Helper()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	var out [][2]int64
	fd := int(f.Fd())
	for off := int64(0); off < fi.Size(); {
		start, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break
		}
		if err != nil {
			// No SEEK_DATA here: treat the whole file as data.
			return [][2]int64{{0, fi.Size()}}
		}
		end, err := unix.Seek(fd, start, unix.SEEK_HOLE)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, [2]int64{start, end})
		off = end
	}
	return out
}

// copyFile copies an image keeping it sparse, so the fsyncs of the code
// under test do not flush megabytes of zeros.
func copyFile(t testing.TB, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), filepath.Base(src))
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		t.Fatal(err)
	}
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range dataRanges(t, in) {
		if _, err := io.Copy(io.NewOffsetWriter(out, r[0]), io.NewSectionReader(in, r[0], r[1]-r[0])); err != nil {
			t.Fatal(err)
		}
	}
	if err := out.Truncate(fi.Size()); err != nil {
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

func readAt(t testing.TB, f *os.File, off, n int64) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil && !errors.Is(err, io.EOF) {
		t.Fatal(err)
	}
	return b
}

// sameFile fails unless two files are byte-identical, naming the first
// difference. Only ranges holding data in either file are read.
func sameFile(t testing.TB, got, want string) {
	t.Helper()
	a, err := os.Open(got)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := os.Open(want)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ai, _ := a.Stat()
	bi, _ := b.Stat()
	if ai.Size() != bi.Size() {
		t.Fatalf("%s is %d bytes, %s is %d", got, ai.Size(), want, bi.Size())
	}
	for _, r := range append(dataRanges(t, a), dataRanges(t, b)...) {
		x, y := readAt(t, a, r[0], r[1]-r[0]), readAt(t, b, r[0], r[1]-r[0])
		if bytes.Equal(x, y) {
			continue
		}
		for i := range x {
			if x[i] != y[i] {
				at := r[0] + int64(i)
				t.Fatalf("files differ first at byte %d (LBA %d, offset %d): %#02x vs %#02x", at, at/512, at%512, x[i], y[i])
			}
		}
	}
}

// tableArea returns the bytes holding the GPT: LBA 0 up to the first usable
// LBA and everything after the last usable LBA.
func tableArea(t testing.TB, img string) []byte {
	t.Helper()
	tbl := parseFile(t, img)
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h, ss := tbl.Header(), int64(tbl.SectorSize)
	out := readAt(t, f, 0, int64(h.FirstUsableLBA)*ss)
	end := int64(tbl.Sectors) * ss
	return append(out, readAt(t, f, int64(h.LastUsableLBA+1)*ss, end-int64(h.LastUsableLBA+1)*ss)...)
}

func parseFile(t testing.TB, img string) *Table {
	t.Helper()
	d, err := OpenDisk(ctxT(t), img, false)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	tbl, err := d.ReadTable()
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
