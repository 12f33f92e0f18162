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
