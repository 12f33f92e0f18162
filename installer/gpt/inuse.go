package gpt

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrInUse: the partition an install would overwrite is mounted or held by
// another block device (device-mapper, md), so writing it would corrupt a
// live filesystem.
var ErrInUse = errors.New("partition in use")

// Kernel state the check reads; fixed paths, not configuration.
const (
	sysDevBlock = "/sys/dev/block"
	sysBlock    = "/sys/block"
	mountInfo   = "/proc/self/mountinfo"
)

// partitionInUse reports (as ErrInUse) whether the kernel's partition index
// of this disk is mounted or held. The disk is seen through every block
// device that exposes it: itself when it is a block device, and every loop
// device backed by it when it is an image file. A disk the kernel has no
// partition devices for cannot have the partition mounted.
func (d *Disk) partitionInUse(index int, name string) error {
	disks, err := d.kernelDevices()
	if err != nil {
		return fmt.Errorf("checking whether %s is in use: %w", name, err)
	}
	var mounts map[string]string
	for _, dir := range disks {
		part, dev, ok := partitionDevice(dir, index)
		if !ok {
			continue
		}
		if mounts == nil {
			if mounts, err = readMounts(mountInfo); err != nil {
				return fmt.Errorf("checking whether %s is in use: %w", name, err)
			}
		}
		if mp, ok := mounts[dev]; ok {
			return fmt.Errorf("%w: %s (/dev/%s) is mounted at %s; unmount it first", ErrInUse, name, part, mp)
		}
		if holders, _ := os.ReadDir(filepath.Join(dir, part, "holders")); len(holders) > 0 {
			return fmt.Errorf("%w: %s (/dev/%s) is held by /dev/%s", ErrInUse, name, part, holders[0].Name())
		}
	}
	return nil
}

// kernelDevices returns the sysfs directories of the whole-disk block
// devices that show this disk's contents.
func (d *Disk) kernelDevices() ([]string, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(d.f.Fd()), &st); err != nil {
		return nil, fmt.Errorf("stat %s: %w", d.path, err)
	}
	if d.block {
		dir := filepath.Join(sysDevBlock, fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev)))
		if _, err := os.Stat(dir); err != nil {
			return nil, nil // no sysfs here: the kernel shows no partitions to check
		}
		return []string{dir}, nil
	}
	backing, _ := filepath.Glob(filepath.Join(sysBlock, "loop*", "loop", "backing_file"))
	var dirs []string
	for _, bf := range backing {
		b, err := os.ReadFile(bf)
		if err != nil {
			continue // detached meanwhile
		}
		var bst unix.Stat_t
		path := strings.TrimSuffix(strings.TrimSpace(string(b)), " (deleted)")
		if unix.Stat(path, &bst) == nil && bst.Dev == st.Dev && bst.Ino == st.Ino {
			dirs = append(dirs, filepath.Dir(filepath.Dir(bf)))
		}
	}
	return dirs, nil
}

// partitionDevice finds the partition with the given index below a
// whole-disk sysfs directory: its name (loop0p4, sda4) and "major:minor".
func partitionDevice(diskDir string, index int) (name, dev string, ok bool) {
	entries, err := os.ReadDir(diskDir)
	if err != nil {
		return "", "", false
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(diskDir, e.Name(), "partition"))
		if err != nil {
			continue
		}
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err != nil || n != index {
			continue
		}
		dv, err := os.ReadFile(filepath.Join(diskDir, e.Name(), "dev"))
		if err != nil {
			return "", "", false
		}
		return e.Name(), strings.TrimSpace(string(dv)), true
	}
	return "", "", false
}

// readMounts maps "major:minor" to the first mount point of that device,
// from a mountinfo file.
func readMounts(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m := map[string]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent major:minor root mountpoint options ...
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		if _, seen := m[fields[2]]; !seen {
			m[fields[2]] = unescapeMount(fields[4])
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
