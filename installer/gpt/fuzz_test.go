package gpt

import (
	"bytes"
	"slices"
	"testing"
)

// FuzzParseGPT feeds arbitrary disks to the parser. It must never panic or
// hang; whatever it accepts must survive a write and parse back the same.
func FuzzParseGPT(f *testing.F) {
	parts := []testPart{
		{index: 1, typ: USRType, id: GUID{1}, first: 34, last: 60, name: LabelA, attrs: attrs(1, 0, true)},
		{index: 3, typ: USRType, id: GUID{3}, first: 61, last: 90, name: LabelB, attrs: attrs(2, 1, false)},
	}
	small := buildDisk(512, 128, 128, parts)
	f.Add(small)
	f.Add(buildDisk(512, 64, 4, parts[:1]))
	f.Add(buildDisk(4096, 24, 16, []testPart{{index: 1, typ: USRType, id: GUID{1}, first: 4, last: 10, name: LabelA}}))
	noPrimary := bytes.Clone(small)
	clear(noPrimary[512:1024])
	f.Add(noPrimary)
	badEntries := bytes.Clone(small)
	badEntries[1024+40] = 0xff
	f.Add(badEntries)
	f.Add([]byte{})
	f.Add(make([]byte, 2048))

	f.Fuzz(func(t *testing.T, data []byte) {
		tbl, err := Parse(bytes.NewReader(data), int64(len(data)), 0)
		if err != nil {
			return
		}
		before := tbl.Partitions()
		_, _ = Select(tbl, USRType)
		_ = tbl.Problems()
		m := &memDisk{b: bytes.Clone(data)}
		if err := tbl.Write(m); err != nil {
			return // e.g. no room to rebuild a lost copy
		}
		again, err := Parse(bytes.NewReader(m.b), int64(len(m.b)), tbl.SectorSize)
		if err != nil {
			t.Fatalf("written table does not parse: %v", err)
		}
		if !again.PrimaryValid() || !again.BackupValid() {
			t.Fatalf("written table has a bad copy: %v", again.Problems())
		}
		if !slices.Equal(again.Partitions(), before) {
			t.Fatalf("partitions changed by a write:\n%v\n%v", before, again.Partitions())
		}
	})
}
