package gpt

import (
	"bytes"
	"errors"
	"slices"
	"testing"
)

func prioDisk(t *testing.T, attrsByIndex map[int]uint64, types map[int]GUID) *Table {
	t.Helper()
	var parts []testPart
	for i := 1; i <= 4; i++ {
		typ := USRType
		if g, ok := types[i]; ok {
			typ = g
		}
		parts = append(parts, testPart{index: i, typ: typ, id: GUID{byte(i)}, first: uint64(100 * i), last: uint64(100*i + 99), attrs: attrsByIndex[i], name: "P"})
	}
	disk := buildDisk(512, 2048, 128, parts)
	tbl, err := Parse(bytes.NewReader(disk), int64(len(disk)), 0)
	if err != nil {
		t.Fatal(err)
	}
	return tbl
}

func TestSelect(t *testing.T) {
	other := GUID{0xaa}
	tests := []struct {
		name  string
		attrs map[int]uint64
		types map[int]GUID
		want  int // 0: ErrNoBootable
	}{
		{"highest priority wins", map[int]uint64{1: attrs(1, 0, true), 2: attrs(2, 1, false)}, nil, 2},
		{"successful without tries is bootable", map[int]uint64{1: attrs(3, 0, true), 2: attrs(2, 1, false)}, nil, 1},
		{"no tries and not successful is skipped", map[int]uint64{1: attrs(1, 0, true), 2: attrs(2, 0, false)}, nil, 1},
		{"priority zero never boots", map[int]uint64{1: attrs(0, 15, true), 2: attrs(1, 1, false)}, nil, 2},
		{"tie goes to the lower index", map[int]uint64{3: attrs(5, 1, false), 2: attrs(5, 0, true), 4: attrs(5, 1, false)}, nil, 2},
		{"other types ignored", map[int]uint64{1: attrs(15, 1, true), 2: attrs(1, 0, true)}, map[int]GUID{1: other}, 2},
		{"nothing bootable", map[int]uint64{1: attrs(0, 0, true), 2: attrs(3, 0, false)}, nil, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tbl := prioDisk(t, tc.attrs, tc.types)
			p, err := Select(tbl, USRType)
			if tc.want == 0 {
				if !errors.Is(err, ErrNoBootable) {
					t.Fatalf("Select = %d, %v; want ErrNoBootable", p.Index, err)
				}
				return
			}
			if err != nil || p.Index != tc.want {
				t.Fatalf("Select = %d, %v; want %d", p.Index, err, tc.want)
			}
		})
	}
}

func TestBootNextSpendsTries(t *testing.T) {
	tbl := prioDisk(t, map[int]uint64{1: attrs(1, 0, true), 2: attrs(2, 2, false)}, nil)
	var booted []int
	for range 4 {
		p, _, err := tbl.BootNext(USRType)
		if err != nil {
			t.Fatal(err)
		}
		booted = append(booted, p.Index)
	}
	// Two tries on partition 2, then the successful partition 1 for good.
	if want := []int{2, 2, 1, 1}; !slices.Equal(booted, want) {
		t.Fatalf("boots %v, want %v", booted, want)
	}
	p2, _ := tbl.Partition(2)
	if p2.Tries() != 0 || p2.Priority() != 2 || p2.Successful() {
		t.Errorf("partition 2 after its tries: P%d T%d S%v", p2.Priority(), p2.Tries(), p2.Successful())
	}
	// A successful partition is booted without spending anything.
	_, changed, _ := tbl.BootNext(USRType)
	if changed {
		t.Error("booting a successful partition changed the table")
	}
}
