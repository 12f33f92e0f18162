package gpt

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// loopDevice attaches img as a loop block device with extra losetup
// options, or skips when this machine cannot (no root, no loop driver).
func loopDevice(t *testing.T, img string, opts ...string) string {
	t.Helper()
	requireTools(t, "losetup")
	out, err := exec.Command("losetup", append(append([]string{"--find", "--show"}, opts...), img)...).CombinedOutput()
	if err != nil {
		t.Skipf("cannot attach a loop device here (needs root and the loop driver): %v %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "--detach", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup --detach %s: %v %s", dev, err, out)
		}
	})
	return dev
}

// TestBlockDevice4KSectors runs an install on real block devices with
// 4096-byte logical sectors, partitioned by sgdisk, against cgpt on a twin.
func TestBlockDevice4KSectors(t *testing.T) {
	requireTools(t, "sgdisk", "cgpt")
	dir := t.TempDir()
	mineFile, theirFile := filepath.Join(dir, "mine.img"), filepath.Join(dir, "their.img")
	for _, f := range []string{mineFile, theirFile} {
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(f, 64<<20); err != nil {
			t.Fatal(err)
		}
	}
	mine := loopDevice(t, mineFile, "--sector-size", "4096")
	run(t, "sgdisk", "-U", "11111111-2222-3333-4444-555555555555",
		"-n", "1:0:+8M", "-t", "1:EF00", "-u", "1:00000000-0000-0000-0000-000000000001", "-c", "1:EFI-SYSTEM",
		"-n", "3:0:+16M", "-t", "3:"+usrTypeStr, "-u", "3:00000000-0000-0000-0000-000000000003", "-c", "3:USR-A",
		"-n", "4:0:+16M", "-t", "4:"+usrTypeStr, "-u", "4:00000000-0000-0000-0000-000000000004", "-c", "4:USR-B",
		mine)
	cgptAdd(t, mine, idxA, 1, 0, 1)
	// The twin gets the same bytes, so both start identical.
	src, err := os.ReadFile(mineFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(theirFile, src, 0o644); err != nil {
		t.Fatal(err)
	}
	their := loopDevice(t, theirFile, "--sector-size", "4096")

	d, err := OpenDisk(ctxT(t), mine, false)
	if err != nil {
		t.Fatal(err)
	}
	tbl, err := d.ReadTable()
	d.Close()
	if err != nil {
		t.Fatal(err)
	}
	if !d.IsBlockDevice() || tbl.SectorSize != 4096 {
		t.Fatalf("block device %v, sector size %d", d.IsBlockDevice(), tbl.SectorSize)
	}
	b, _ := tbl.Partition(idxB)

	data := imageData(5<<20+4097, 30)
	res, err := Install(ctxT(t), Options{Target: Target{Disk: mine, Booted: LabelA}, Image: bytes.NewReader(data), SHA256: sha(data)})
	if err != nil {
		t.Fatal(err)
	}
	if res.Passive.SizeBytes != 16<<20 || res.Passive.Index != idxB {
		t.Errorf("passive %+v", res.Passive)
	}
	f, err := os.OpenFile(their, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(data, int64(b.FirstLBA)*4096); err != nil {
		t.Fatal(err)
	}
	f.Sync()
	f.Close()
	cgptAdd(t, their, idxB, 2, 1, 0)
	sameFile(t, mineFile, theirFile)
	sgdiskClean(t, mine)
	wantCgpt(t, mine, idxB, 2, 1, 0)

	if p, err := Boot(ctxT(t), mine); err != nil || p.Index != idxB {
		t.Fatalf("boot: %v %v", p.Name, err)
	}
	if _, err := MarkGood(ctxT(t), Target{Disk: mine, Booted: LabelB}); err != nil {
		t.Fatal(err)
	}
	wantCgpt(t, mine, idxB, 2, 0, 1)
	sgdiskClean(t, mine)
}
