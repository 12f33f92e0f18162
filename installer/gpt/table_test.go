package gpt

import (
	"bytes"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
)

func TestGUIDRoundTrip(t *testing.T) {
	g := mustGUID(t, usrTypeStr)
	if g != USRType {
		t.Fatalf("ParseGUID(%s) = % x, want USRType % x", usrTypeStr, g[:], USRType[:])
	}
	if got := USRType.String(); got != usrTypeStr {
		t.Errorf("String() = %s", got)
	}
	if g2 := mustGUID(t, "{"+strings.ToUpper(usrTypeStr)+"}"); g2 != g {
		t.Errorf("upper case with braces parsed differently")
	}
	for _, bad := range []string{"", "5dfbf5f4", "5dfbf5f4-2848-4bac-aa5e-0d9a20b745aZ", "5dfbf5f4x2848-4bac-aa5e-0d9a20b745a6"} {
		if _, err := ParseGUID(bad); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("ParseGUID(%q) = %v, want ErrInvalidArgument", bad, err)
		}
	}
}

func TestParseSgdiskImage(t *testing.T) {
	img := newImage(t)
	tbl := parseFile(t, img)
	if tbl.SectorSize != 512 || !tbl.PrimaryValid() || !tbl.BackupValid() || !tbl.HasProtectiveMBR() {
		t.Fatalf("sector %d primary %v backup %v pmbr %v; problems %v", tbl.SectorSize, tbl.PrimaryValid(), tbl.BackupValid(), tbl.HasProtectiveMBR(), tbl.Problems())
	}
	var got []string
	for _, p := range tbl.Partitions() {
		got = append(got, strconv.Itoa(p.Index)+":"+p.Name)
		out := run(t, "sgdisk", "-i", strconv.Itoa(p.Index), img)
		for _, want := range []string{
			"Partition unique GUID: " + strings.ToUpper(p.ID.String()),
			"First sector: " + strconv.FormatUint(p.FirstLBA, 10) + " ",
			"Last sector: " + strconv.FormatUint(p.LastLBA, 10) + " ",
			"Partition name: '" + p.Name + "'",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("partition %d: sgdisk -i lacks %q:\n%s", p.Index, want, out)
			}
		}
		if p.Type == USRType && !strings.Contains(out, "Partition GUID code: "+strings.ToUpper(usrTypeStr)) {
			t.Errorf("partition %d: type not usr in sgdisk output", p.Index)
		}
	}
	if strings.Join(got, " ") != "1:EFI-SYSTEM 2:BIOS-BOOT 3:USR-A 4:USR-B 9:ROOT" {
		t.Errorf("partitions %v", got)
	}
	a, _ := tbl.Partition(idxA)
	if a.Priority() != 1 || a.Tries() != 0 || !a.Successful() {
		t.Errorf("USR-A P%d T%d S%v, want the P1 T0 S1 set by cgpt", a.Priority(), a.Tries(), a.Successful())
	}
	if _, err := tbl.Partition(5); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("unused entry 5: %v", err)
	}
	if _, err := tbl.Partition(129); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("entry 129 of 128: %v", err)
	}
}

// setPrioOnFile applies SetPrio to an image file through Disk.
func setPrioOnFile(t *testing.T, img string, idx, p, tries, s int) {
	t.Helper()
	d, err := OpenDisk(ctxT(t), img, true)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	tbl, err := d.ReadTable()
	if err != nil {
		t.Fatal(err)
	}
	if err := tbl.SetPrio(idx, p, tries, s == 1); err != nil {
		t.Fatal(err)
	}
	if err := d.WriteTable(tbl); err != nil {
		t.Fatal(err)
	}
}

func TestSetPrioMatchesCgpt(t *testing.T) {
	tests := []struct {
		name        string
		prep        [][]string // extra commands on the base image (argv, image appended)
		idx, p, tr  int
		s           int
		wantSgdiskA string // attribute flags sgdisk -i shows afterwards
	}{
		{name: "stage B", idx: idxB, p: 2, tr: 1, s: 0, wantSgdiskA: "0012000000000000"},
		{name: "mark A good", idx: idxA, p: 1, tr: 0, s: 1, wantSgdiskA: "0101000000000000"},
		{name: "max values", idx: idxB, p: 15, tr: 15, s: 1, wantSgdiskA: "01FF000000000000"},
		{name: "clear all", idx: idxA, p: 0, tr: 0, s: 0, wantSgdiskA: "0000000000000000"},
		{name: "other bits kept", prep: [][]string{{"sgdisk", "-A", "4:set:0", "-A", "4:set:2", "-A", "4:set:60", "-A", "4:set:63"}},
			idx: idxB, p: 3, tr: 2, s: 1, wantSgdiskA: "9123000000000005"},
		{name: "non-usr partition", idx: idxRoot, p: 5, tr: 4, s: 0, wantSgdiskA: "0045000000000000"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			base := newImage(t)
			for _, c := range tc.prep {
				run(t, append(c, base)...)
			}
			mine, theirs := copyFile(t, base), copyFile(t, base)
			setPrioOnFile(t, mine, tc.idx, tc.p, tc.tr, tc.s)
			cgptAdd(t, theirs, tc.idx, tc.p, tc.tr, tc.s)
			sameFile(t, mine, theirs)
			sgdiskClean(t, mine)
			wantCgpt(t, mine, tc.idx, tc.p, tc.tr, tc.s)
			if got := sgdiskAttrs(t, mine, tc.idx); !strings.EqualFold(got, tc.wantSgdiskA) {
				t.Errorf("sgdisk -i %d attribute flags %s, want %s", tc.idx, got, tc.wantSgdiskA)
			}
		})
	}
}

func TestSetPrioRejectsBadValues(t *testing.T) {
	disk := buildDisk(512, 2048, 128, []testPart{{index: 1, typ: USRType, id: GUID{9}, first: 40, last: 100, name: LabelA}})
	tbl, err := Parse(bytes.NewReader(disk), int64(len(disk)), 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ idx, p, tr int }{{1, 16, 0}, {1, 0, 16}, {1, -1, 0}, {2, 1, 1}, {0, 1, 1}, {129, 1, 1}} {
		if err := tbl.SetPrio(tc.idx, tc.p, tc.tr, false); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("SetPrio(%d, %d, %d) = %v, want ErrInvalidArgument", tc.idx, tc.p, tc.tr, err)
		}
	}
}

func TestRecoverFromOneCorruptCopy(t *testing.T) {
	const ss = 512
	lastLBA := int64(imgSize/ss - 1)
	tests := []struct {
		name        string
		off         int64 // byte to damage
		primaryBad  bool
		wantProblem string
	}{
		{"primary header CRC", ss + 16, true, "header CRC"},
		{"primary signature", ss, true, "no signature"},
		{"primary my_lba", ss + 24, true, "header CRC"},
		{"primary entry array", 2*ss + 128*2 + 60, true, "entry array CRC"},
		{"backup header CRC", lastLBA*ss + 20, false, "header CRC"},
		{"backup entry array", (lastLBA-32)*ss + 3, false, "entry array CRC"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			orig := newImage(t)
			img := copyFile(t, orig)
			f, err := os.OpenFile(img, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			b := []byte{0}
			if _, err := f.ReadAt(b, tc.off); err != nil {
				t.Fatal(err)
			}
			b[0] ^= 0x5a
			if _, err := f.WriteAt(b, tc.off); err != nil {
				t.Fatal(err)
			}
			f.Close()

			tbl := parseFile(t, img)
			if tbl.PrimaryValid() == tc.primaryBad || tbl.BackupValid() != tc.primaryBad {
				t.Fatalf("primary valid %v backup valid %v", tbl.PrimaryValid(), tbl.BackupValid())
			}
			if p := strings.Join(tbl.Problems(), "; "); !strings.Contains(p, tc.wantProblem) {
				t.Errorf("problems %q lack %q", p, tc.wantProblem)
			}
			want := parseFile(t, orig).Partitions()
			if got := tbl.Partitions(); len(got) != len(want) || got[2] != want[2] || got[3] != want[3] {
				t.Fatalf("partitions from the surviving copy differ:\n%v\n%v", got, want)
			}

			// Repair restores the damaged copy exactly as sgdisk wrote it.
			fixed, err := Repair(ctxT(t), img)
			if err != nil || len(fixed) == 0 {
				t.Fatalf("Repair = %v, %v", fixed, err)
			}
			sameFile(t, img, orig)
			sgdiskClean(t, img)
			if fixed, err := Repair(ctxT(t), img); err != nil || fixed != nil {
				t.Errorf("second Repair = %v, %v; want nothing to do", fixed, err)
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	good := func() []byte {
		return buildDisk(512, 4096, 128, []testPart{
			{index: 1, typ: USRType, id: GUID{1}, first: 34, last: 1000, name: LabelA},
			{index: 2, typ: USRType, id: GUID{2}, first: 1001, last: 2000, name: LabelB},
		})
	}
	// rewrite re-encodes both copies after changing the table, so the CRCs
	// are right and only the content is wrong.
	rewrite := func(t *testing.T, disk []byte, change func(*Table)) []byte {
		tbl, err := Parse(bytes.NewReader(disk), int64(len(disk)), 0)
		if err != nil {
			t.Fatal(err)
		}
		change(tbl)
		m := &memDisk{b: disk}
		if err := tbl.Write(m); err != nil {
			t.Fatal(err)
		}
		return m.b
	}
	setLBA := func(idx int, first, last uint64) func(*Table) {
		return func(tbl *Table) {
			e := tbl.entries[(idx-1)*128:]
			putU64(e[32:], first)
			putU64(e[40:], last)
		}
	}
	tests := []struct {
		name string
		disk func(t *testing.T) []byte
		want error
	}{
		{"zeros", func(*testing.T) []byte { return make([]byte, 1<<20) }, ErrNoGPT},
		{"too small", func(*testing.T) []byte { return []byte("EFI PART") }, ErrNoGPT},
		{"both headers damaged", func(*testing.T) []byte {
			d := good()
			d[512+16] ^= 1
			d[len(d)-512+16] ^= 1
			return d
		}, ErrCorrupt},
		{"overlapping partitions", func(t *testing.T) []byte { return rewrite(t, good(), setLBA(2, 900, 2000)) }, ErrCorrupt},
		{"inverted partition", func(t *testing.T) []byte { return rewrite(t, good(), setLBA(2, 2000, 1001)) }, ErrCorrupt},
		{"partition over backup GPT", func(t *testing.T) []byte { return rewrite(t, good(), setLBA(2, 1001, 4095)) }, ErrCorrupt},
		{"partition over primary GPT", func(t *testing.T) []byte { return rewrite(t, good(), setLBA(1, 1, 1000)) }, ErrCorrupt},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := tc.disk(t)
			_, err := Parse(bytes.NewReader(d), int64(len(d)), 0)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Parse = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestWriteOrderBackupFirst(t *testing.T) {
	disk := buildDisk(512, 4096, 128, []testPart{{index: 1, typ: USRType, id: GUID{1}, first: 34, last: 1000, name: LabelA}})
	tbl, err := Parse(bytes.NewReader(disk), int64(len(disk)), 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := tbl.SetPrio(1, 2, 1, false); err != nil {
		t.Fatal(err)
	}
	m := &memDisk{b: bytes.Clone(disk)}
	if err := tbl.Write(m); err != nil {
		t.Fatal(err)
	}
	want := "write@2080256 write@2096640 sync write@1024 write@512 sync" // backup entries, backup header, primary entries, primary header
	if got := strings.Join(m.events, " "); got != want {
		t.Errorf("write order %q, want %q", got, want)
	}

	// A failure after the backup is written leaves the old primary in
	// charge; the next write repairs the backup.
	crash := &memDisk{b: bytes.Clone(disk), failAfter: 3}
	tbl2, _ := Parse(bytes.NewReader(disk), int64(len(disk)), 0)
	if err := tbl2.SetPrio(1, 2, 1, false); err != nil {
		t.Fatal(err)
	}
	if err := tbl2.Write(crash); err == nil {
		t.Fatal("injected failure not reported")
	}
	after, err := Parse(bytes.NewReader(crash.b), int64(len(crash.b)), 0)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := after.Partition(1)
	if p.Priority() != 0 || !after.PrimaryValid() || after.BackupValid() {
		t.Errorf("after a crash between the copies: priority %d, primary valid %v, backup valid %v; want old priority 0 from the primary and a stale backup",
			p.Priority(), after.PrimaryValid(), after.BackupValid())
	}
	if err := after.Write(crash2(crash)); err != nil {
		t.Fatal(err)
	}
	again, err := Parse(bytes.NewReader(crash.b), int64(len(crash.b)), 0)
	if err != nil || !again.BackupValid() {
		t.Fatalf("repair: %v, backup valid %v", err, again != nil && again.BackupValid())
	}
}

func crash2(m *memDisk) *memDisk { m.failAfter = 0; return m }

func TestSector4096(t *testing.T) {
	const ss = 4096
	disk := buildDisk(ss, 4096, 128, []testPart{
		{index: 1, typ: USRType, id: GUID{1}, first: 6, last: 1000, name: LabelA, attrs: attrs(1, 0, true)},
		{index: 2, typ: USRType, id: GUID{2}, first: 1001, last: 2000, name: LabelB},
	})
	tbl, err := Parse(bytes.NewReader(disk), int64(len(disk)), 0)
	if err != nil {
		t.Fatal(err)
	}
	if tbl.SectorSize != ss || tbl.Header().FirstUsableLBA != 6 {
		t.Fatalf("sector size %d, first usable %d", tbl.SectorSize, tbl.Header().FirstUsableLBA)
	}
	if err := tbl.SetPrio(2, 2, 1, false); err != nil {
		t.Fatal(err)
	}
	m := &memDisk{b: disk}
	if err := tbl.Write(m); err != nil {
		t.Fatal(err)
	}
	if strings.Join(m.events, " ") != "write@16756736 write@16773120 sync write@8192 write@4096 sync" {
		t.Errorf("4K writes %v", m.events)
	}
	again, err := Parse(bytes.NewReader(m.b), int64(len(m.b)), 0)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := again.Partition(2)
	if !again.PrimaryValid() || !again.BackupValid() || p.Priority() != 2 || p.Tries() != 1 {
		t.Errorf("after write: primary %v backup %v, B P%d T%d", again.PrimaryValid(), again.BackupValid(), p.Priority(), p.Tries())
	}
	// Read as 512-byte sectors the same bytes are not a GPT.
	if _, err := Parse(bytes.NewReader(m.b), int64(len(m.b)), 512); err == nil {
		t.Error("a 4K-sector GPT parsed with 512-byte sectors")
	}
}
