package gpt

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// An install must not write into a passive partition that is mounted:
// refused with ErrInUse, naming the mount point, whether the disk is given
// as the block device or as the image file behind it, and with the table
// and the partition's filesystem untouched. Once unmounted it installs.
func TestInstallRefusesMountedPassive(t *testing.T) {
	requireTools(t, "mkfs.ext4", "mount", "umount")
	img := newImage(t)
	dev := loopDevice(t, img, "--partscan")
	partDev := partitionNode(t, dev, idxB) // USR-B, the passive slot
	run(t, "mkfs.ext4", "-q", "-F", partDev)
	mnt := filepath.Join(t.TempDir(), "usr b") // a space, escaped in mountinfo
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", partDev, mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount here: %v %s", err, out)
	}
	mounted := true
	unmount := func() {
		if mounted {
			run(t, "umount", mnt)
			mounted = false
		}
	}
	t.Cleanup(unmount)
	if err := os.WriteFile(filepath.Join(mnt, "keep"), []byte("live data"), 0o644); err != nil {
		t.Fatal(err)
	}

	before := tableArea(t, img)
	data := imageData(1<<20, 7)
	for _, disk := range []string{dev, img} {
		t.Run(filepath.Base(disk), func(t *testing.T) {
			_, err := Install(ctxT(t), Options{Target: Target{Disk: disk, Booted: LabelA}, Image: bytes.NewReader(data), SHA256: sha(data)})
			if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "mounted at "+mnt) || !strings.Contains(err.Error(), "USR-B") {
				t.Fatalf("err = %v, want ErrInUse naming USR-B and %s", err, mnt)
			}
			if !bytes.Equal(tableArea(t, img), before) {
				t.Fatal("partition table changed")
			}
			if b, err := os.ReadFile(filepath.Join(mnt, "keep")); err != nil || string(b) != "live data" {
				t.Fatalf("mounted filesystem touched: %q %v", b, err)
			}
		})
	}

	unmount()
	if _, err := Install(ctxT(t), Options{Target: Target{Disk: dev, Booted: LabelA}, Image: bytes.NewReader(data), SHA256: sha(data)}); err != nil {
		t.Fatalf("after unmount: %v", err)
	}
	wantCgpt(t, img, idxB, 2, 1, 0)
}

// mountAt makes an ext4 filesystem on dev and mounts it on a fresh
// directory until the test ends, or skips when this machine cannot mount.
func mountAt(t *testing.T, dev string) string {
	t.Helper()
	requireTools(t, "mkfs.ext4", "mount", "umount")
	run(t, "mkfs.ext4", "-q", "-F", dev)
	mnt := t.TempDir()
	if out, err := exec.Command("mount", dev, mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount here: %v %s", err, out)
	}
	t.Cleanup(func() { run(t, "umount", mnt) })
	return mnt
}

// Every other way the kernel can show the passive partition in use is
// refused too: each case sets up one and names the disk to install to.
func TestInstallRefusesPassiveInUse(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, img string) (disk, why string)
	}{
		{"loop over the partition's byte range, mounted", func(t *testing.T, img string) (string, string) {
			b := part(t, img, idxB)
			loop := loopDevice(t, img, "--offset", fmt.Sprint(b.FirstLBA*512), "--sizelimit", fmt.Sprint(b.Sectors()*512))
			return img, "mounted at " + mountAt(t, loop)
		}},
		{"second loop of the same image, its partition mounted", func(t *testing.T, img string) (string, string) {
			disk := loopDevice(t, img) // no partition devices of its own
			other := loopDevice(t, img, "--partscan")
			return disk, "mounted at " + mountAt(t, partitionNode(t, other, idxB))
		}},
		{"loop over the partition device, mounted", func(t *testing.T, img string) (string, string) {
			disk := loopDevice(t, img, "--partscan")
			loop := loopDevice(t, partitionNode(t, disk, idxB))
			return disk, "mounted at " + mountAt(t, loop)
		}},
		{"swap on the partition", func(t *testing.T, img string) (string, string) {
			requireTools(t, "mkswap", "swapon", "swapoff")
			disk := loopDevice(t, img, "--partscan")
			pdev := partitionNode(t, disk, idxB)
			run(t, "mkswap", pdev)
			if out, err := exec.Command("swapon", pdev).CombinedOutput(); err != nil {
				t.Skipf("cannot enable swap here: %v %s", err, out)
			}
			t.Cleanup(func() { run(t, "swapoff", pdev) })
			return disk, "in use as swap"
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := newImage(t)
			disk, why := tc.setup(t, img)
			before := tableArea(t, img)
			data := imageData(1<<20, 7)
			_, err := Install(ctxT(t), Options{Target: Target{Disk: disk, Booted: LabelA}, Image: bytes.NewReader(data), SHA256: sha(data)})
			if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), why) {
				t.Fatalf("err = %v, want ErrInUse: %s", err, why)
			}
			if !bytes.Equal(tableArea(t, img), before) {
				t.Fatal("partition table changed")
			}
		})
	}
}

// The active partition's and other partitions' use is no reason to refuse.
func TestInstallIgnoresOtherPartitionsInUse(t *testing.T) {
	img := newImage(t)
	disk := loopDevice(t, img, "--partscan")
	mountAt(t, partitionNode(t, disk, idxA))
	data := imageData(1<<20, 7)
	if _, err := Install(ctxT(t), Options{Target: Target{Disk: disk, Booted: LabelA}, Image: bytes.NewReader(data), SHA256: sha(data)}); err != nil {
		t.Fatalf("install with the active slot mounted: %v", err)
	}
}

// partitionNode tells the kernel about dev's partitions (partx reads the
// GPT itself, for kernels built without GPT support) and returns the device
// node of partition n, or skips when this machine shows none.
func partitionNode(t *testing.T, dev string, n int) string {
	t.Helper()
	requireTools(t, "partx")
	run(t, "partx", "--update", dev)
	p := fmt.Sprintf("%sp%d", dev, n)
	if _, err := os.Stat(p); err != nil {
		t.Skipf("no device node for partition %d of %s (no devtmpfs here): %v", n, dev, err)
	}
	return p
}

func TestUnescapeMount(t *testing.T) {
	for in, want := range map[string]string{
		`/mnt/usr\040b`: "/mnt/usr b",
		`/plain`:        "/plain",
		`/tab\011x`:     "/tab\tx",
		`/short\04`:     `/short\04`,
		`/bad\0z9`:      `/bad\0z9`,
	} {
		if got := unescapeMount(in); got != want {
			t.Errorf("unescapeMount(%q) = %q, want %q", in, got, want)
		}
	}
}
