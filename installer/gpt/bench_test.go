package gpt

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkInstall installs an image into a sparse disk image file and, in
// the same iteration, copies the same image to the same offset of an
// identical file the way `dd bs=4M conv=fsync` does (4 MiB buffer, one
// fsync). It reports install/dd, the speed target being at most 1.2.
// Run: go test -run '^$' -bench Install -benchtime 3x ./installer/gpt/
// (installer/gpt/bench/run.sh measures the real binaries with 1 GiB).
func BenchmarkInstall(b *testing.B) {
	requireTools(b, "sgdisk", "cgpt")
	const size = 256 << 20
	dir := b.TempDir()
	data := imageData(size, 42)
	imgPath := filepath.Join(dir, "usr.img")
	if err := os.WriteFile(imgPath, data, 0o644); err != nil {
		b.Fatal(err)
	}
	sum := sha(data)
	base := filepath.Join(dir, "base.img")
	if err := os.WriteFile(base, nil, 0o644); err != nil {
		b.Fatal(err)
	}
	if err := os.Truncate(base, 2*(size+(16<<20))+(64<<20)); err != nil {
		b.Fatal(err)
	}
	slot := fmt.Sprintf("+%dM", size>>20+16)
	for _, argv := range [][]string{
		{"sgdisk", "-n", "3:2048:" + slot, "-t", "3:" + usrTypeStr, "-c", "3:USR-A", "-n", "4:0:" + slot, "-t", "4:" + usrTypeStr, "-c", "4:USR-B", base},
		{"cgpt", "add", "-i", "3", "-P", "1", "-S", "1", base},
	} {
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			b.Fatalf("%v: %v %s", argv, err, out)
		}
	}
	off := int64(part(b, base, 4).FirstLBA) * 512

	for _, bufSize := range []int{256 << 10, DefaultBufferSize, 4 << 20} {
		b.Run(fmt.Sprintf("buf=%dKiB", bufSize>>10), func(b *testing.B) {
			b.SetBytes(size)
			var ddTime, installTime time.Duration
			for b.Loop() {
				b.StopTimer()
				ddDisk, mine := copyFile(b, base), copyFile(b, base)
				b.StartTimer()

				start := time.Now()
				ddCopy(b, imgPath, ddDisk, off)
				ddTime += time.Since(start)

				start = time.Now()
				if _, err := Install(b.Context(), Options{Target: Target{Disk: mine, Booted: LabelA}, ImagePath: imgPath, SHA256: sum, BufferSize: bufSize}); err != nil {
					b.Fatal(err)
				}
				installTime += time.Since(start)

				b.StopTimer()
				os.Remove(ddDisk)
				os.Remove(mine)
				b.StartTimer()
			}
			b.ReportMetric(float64(installTime)/float64(ddTime), "install/dd")
		})
	}
}

// ddCopy is what `dd bs=4M seek=off oflag=seek_bytes conv=fsync,notrunc` does.
func ddCopy(b *testing.B, src, dst string, off int64) {
	in, err := os.Open(src)
	if err != nil {
		b.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer out.Close()
	buf := make([]byte, 4<<20)
	for pos := off; ; {
		n, err := io.ReadFull(in, buf)
		if n > 0 {
			if _, werr := out.WriteAt(buf[:n], pos); werr != nil {
				b.Fatal(werr)
			}
			pos += int64(n)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	if err := out.Sync(); err != nil {
		b.Fatal(err)
	}
}
