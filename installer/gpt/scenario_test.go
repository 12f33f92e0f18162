package gpt

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// twin applies every step to our image with this package and to a copy
// with cgpt (and plain writes for image data), and checks after each step
// that both files are byte-identical.
type twin struct {
	t           *testing.T
	mine, their string
}

func newTwin(t *testing.T) *twin {
	base := newImage(t)
	return &twin{t: t, mine: copyFile(t, base), their: copyFile(t, base)}
}

func (w *twin) check(step string) {
	w.t.Helper()
	w.t.Logf("step: %s", step)
	sameFile(w.t, w.mine, w.their)
	sgdiskClean(w.t, w.mine)
}

func (w *twin) install(booted string, passive int, data []byte, cgptSteps ...[4]int) Result {
	w.t.Helper()
	res, err := Install(ctxT(w.t), Options{Target: Target{Disk: w.mine, Booted: booted}, Image: bytes.NewReader(data), SHA256: sha(data)})
	if err != nil {
		w.t.Fatalf("install while %s is booted: %v", booted, err)
	}
	ddInto(w.t, w.their, passive, data)
	for _, c := range cgptSteps {
		cgptAdd(w.t, w.their, c[0], c[1], c[2], c[3])
	}
	w.check("install into " + res.Passive.Label)
	return res
}

// boot runs the gptprio port on our image; the reference image gets the
// same tries decrement through cgpt.
func (w *twin) boot(want string, cgptStep *[4]int) Partition {
	w.t.Helper()
	p, err := Boot(ctxT(w.t), w.mine)
	if err != nil {
		w.t.Fatal(err)
	}
	if p.Name != want {
		w.t.Fatalf("booted %s, want %s", p.Name, want)
	}
	if cgptStep != nil {
		cgptAdd(w.t, w.their, cgptStep[0], cgptStep[1], cgptStep[2], cgptStep[3])
	}
	w.check("boot of " + want)
	return p
}

func (w *twin) markGood(booted string, idx, prio int) State {
	w.t.Helper()
	st, err := MarkGood(ctxT(w.t), Target{Disk: w.mine, Booted: booted})
	if err != nil {
		w.t.Fatal(err)
	}
	cgptAdd(w.t, w.their, idx, prio, 0, 1)
	w.check("mark-good of " + booted)
	return st
}

func TestUpdateBootMarkGood(t *testing.T) {
	w := newTwin(t)
	v2, v3 := imageData(2<<20, 10), imageData(3<<20+99, 11)

	res := w.install(LabelA, idxB, v2, [4]int{idxB, 2, 1, 0})
	if !res.Staged || res.Next != LabelB {
		t.Fatalf("after install: staged %v next %q", res.Staged, res.Next)
	}
	w.boot(LabelB, &[4]int{idxB, 2, 0, 0})
	// Booted but not yet marked good: nothing is staged any more.
	st, err := Inspect(ctxT(t), Target{Disk: w.mine, Booted: LabelB})
	if err != nil || st.Staged || st.Booted.Tries != 0 || st.Booted.Successful {
		t.Fatalf("after first boot of B: %+v, %v", st, err)
	}
	st = w.markGood(LabelB, idxB, 2)
	if !st.Booted.Successful || st.Booted.Tries != 0 || st.Next != LabelB {
		t.Fatalf("after mark-good: %+v", st)
	}
	wantCgpt(t, w.mine, idxB, 2, 0, 1)
	w.boot(LabelB, nil) // a good slot boots without spending tries

	// The next update goes the other way.
	w.install(LabelB, idxA, v3, [4]int{idxA, 3, 1, 0})
	w.boot(LabelA, &[4]int{idxA, 3, 0, 0})
	w.markGood(LabelA, idxA, 3)
	if !bytes.Equal(partData(t, w.mine, idxA, int64(len(v3))), v3) || !bytes.Equal(partData(t, w.mine, idxB, int64(len(v2))), v2) {
		t.Error("slot contents are not the installed images")
	}
}

func TestFailedUpdateFallsBack(t *testing.T) {
	w := newTwin(t)
	w.install(LabelA, idxB, imageData(1<<20, 12), [4]int{idxB, 2, 1, 0})
	w.boot(LabelB, &[4]int{idxB, 2, 0, 0}) // the one try; the new slot never gets marked good
	w.boot(LabelA, nil)                    // tries ran out: back on the old slot
	w.boot(LabelA, nil)

	st, err := Inspect(ctxT(t), Target{Disk: w.mine, Booted: LabelA})
	if err != nil {
		t.Fatal(err)
	}
	if st.Staged || st.Next != LabelA || st.Passive.Successful {
		t.Fatalf("after fallback: %+v", st)
	}
	// The failed slot is no rollback target...
	if _, err := Rollback(ctxT(t), Target{Disk: w.mine, Booted: LabelA}); !errors.Is(err, ErrNoRollbackTarget) {
		t.Fatalf("Rollback to a never-good slot = %v, want ErrNoRollbackTarget", err)
	}
	w.check("refused rollback")
	// ...but the next update may overwrite it.
	w.install(LabelA, idxB, imageData(1<<20, 13), [4]int{idxB, 2, 1, 0})
}

func TestRollback(t *testing.T) {
	tests := []struct {
		name      string
		bPrio     int       // priority the update got, via cgpt before the test
		cgptSteps [][4]int  // what cgpt does for the same rollback
		want      [2][2]int // A prio, B prio afterwards
	}{
		{"above the booted slot", 2, [][4]int{{idxA, 3, 0, 1}}, [2][2]int{{idxA, 3}, {idxB, 2}}},
		{"booted at 15 is lowered", 15, [][4]int{{idxA, 15, 0, 1}, {idxB, 14, 0, 1}}, [2][2]int{{idxA, 15}, {idxB, 14}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := newTwin(t)
			// B was updated, booted and marked good; now it misbehaves.
			cgptAdd(t, w.mine, idxB, tc.bPrio, 0, 1)
			cgptAdd(t, w.their, idxB, tc.bPrio, 0, 1)
			st, err := Rollback(ctxT(t), Target{Disk: w.mine, Booted: LabelB})
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range tc.cgptSteps {
				cgptAdd(t, w.their, c[0], c[1], c[2], c[3])
			}
			w.check("rollback")
			for _, c := range tc.want {
				if p := part(t, w.mine, c[0]); p.Priority() != c[1] {
					t.Errorf("partition %d priority %d, want %d", c[0], p.Priority(), c[1])
				}
			}
			if st.Next != LabelA {
				t.Errorf("next boot %q, want USR-A", st.Next)
			}
			w.boot(LabelA, nil)
		})
	}
}

func TestBootedSlotResolution(t *testing.T) {
	img := newImage(t)
	a, b := part(t, img, idxA), part(t, img, idxB)
	dir := t.TempDir()
	cmdline := func(s string) string {
		p := filepath.Join(dir, strings.ReplaceAll(s, "/", "_")+".cmdline")
		if err := os.WriteFile(p, []byte(s+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name    string
		booted  string
		cmdline string // contents; "" means a missing file
		want    string // booted label; "" means ErrBootedUnknown
	}{
		{name: "label", booted: LabelB, want: LabelB},
		{name: "PARTUUID upper case", booted: strings.ToUpper(a.ID.String()), want: LabelA},
		{name: "PARTUUID= prefix", booted: "PARTUUID=" + b.ID.String(), want: LabelB},
		{name: "PARTLABEL= prefix", booted: "PARTLABEL=USR-A", want: LabelA},
		{name: "configured wins over cmdline", booted: LabelA, cmdline: "mount.usr=PARTUUID=" + b.ID.String(), want: LabelA},
		{name: "unknown label", booted: "USR-C", want: ""},
		{name: "unknown PARTUUID", booted: "PARTUUID=00000000-0000-0000-0000-000000000001", want: ""},
		{name: "cmdline mount.usr", cmdline: "BOOT_IMAGE=/flatcar/vmlinuz-a mount.usr=PARTUUID=" + a.ID.String() + " rootflags=rw", want: LabelA},
		{name: "cmdline verity.usr", cmdline: "mount.usr=/dev/mapper/usr verity.usr=PARTUUID=" + b.ID.String() + " root=LABEL=ROOT", want: LabelB},
		{name: "cmdline usr=", cmdline: "usr=PARTLABEL=USR-B console=ttyS0", want: LabelB},
		{name: "cmdline without usr", cmdline: "root=/dev/vda9 quiet", want: ""},
		{name: "cmdline names another disk", cmdline: "mount.usr=PARTUUID=7130c94a-213a-4e5a-8e26-6cce9662f132", want: ""},
		{name: "no cmdline file", want: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tg := Target{Disk: img, Booted: tc.booted, CmdlinePath: filepath.Join(dir, "missing")}
			if tc.cmdline != "" {
				tg.CmdlinePath = cmdline(tc.cmdline)
			}
			st, err := Inspect(ctxT(t), tg)
			if tc.want == "" {
				if !errors.Is(err, ErrBootedUnknown) {
					t.Fatalf("Inspect = %+v, %v; want ErrBootedUnknown", st.Booted, err)
				}
				return
			}
			if err != nil || st.Booted.Label != tc.want {
				t.Fatalf("Inspect = %q, %v; want %s", st.Booted.Label, err, tc.want)
			}
		})
	}
}

func TestUsrFromCmdline(t *testing.T) {
	for in, want := range map[string]string{
		"":                          "",
		"mount.usr=/dev/mapper/usr": "",
		"mount.usr=PARTUUID=ab":     "PARTUUID=ab",
		"usr=PARTLABEL=USR-A mount.usr=PARTUUID=cd": "PARTUUID=cd",
		`verity.usr="PARTUUID=ef"`:                  "PARTUUID=ef",
		"xmount.usr=PARTUUID=ab":                    "",
	} {
		if got := UsrFromCmdline(in); got != want {
			t.Errorf("UsrFromCmdline(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestNoSlotPair(t *testing.T) {
	for name, parts := range map[string][]testPart{
		"only USR-A":       {{index: 1, typ: USRType, id: GUID{1}, first: 40, last: 99, name: LabelA}},
		"USR-B wrong type": {{index: 1, typ: USRType, id: GUID{1}, first: 40, last: 99, name: LabelA}, {index: 2, typ: GUID{7}, id: GUID{2}, first: 100, last: 199, name: LabelB}},
		"two USR-A": {{index: 1, typ: USRType, id: GUID{1}, first: 40, last: 99, name: LabelA}, {index: 2, typ: USRType, id: GUID{2}, first: 100, last: 199, name: LabelA},
			{index: 3, typ: USRType, id: GUID{3}, first: 200, last: 299, name: LabelB}},
	} {
		t.Run(name, func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "d.img")
			if err := os.WriteFile(img, buildDisk(512, 1024, 128, parts), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := Inspect(ctxT(t), Target{Disk: img, Booted: LabelA}); !errors.Is(err, ErrNoSlotPair) {
				t.Fatalf("Inspect = %v, want ErrNoSlotPair", err)
			}
		})
	}
}
