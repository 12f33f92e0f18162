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

// ErrInUse: the partition an install would overwrite is in use — a mounted
// filesystem, swap, or a device-mapper/md/loop holder — so writing it would
// corrupt live data.
var ErrInUse = errors.New("partition in use")

// Kernel state the check reads; fixed paths, not configuration.
const (
	sysDevBlock = "/sys/dev/block"
	sysBlock    = "/sys/block"
	devDir      = "/dev"
	mountInfo   = "/proc/self/mountinfo"
	procSwaps   = "/proc/swaps"
)

// extent is a kernel block device that shows the disk's bytes
// [off, off+size) (off may be negative for a device starting before the
// disk, e.g. a loop over the image file when the disk is a loop at an
// offset).
type extent struct {
	dir       string // sysfs directory
	off, size int64
	// partitioned: the device has partition devices of its own, which are
	// examined instead of it (opening it exclusively would report the
	// active partition's mount).
	partitioned bool
	disk        bool // the disk itself
}

// identity says which kernel object shows the disk: byte b of the object
// (an image file "f:dev:ino" or a block device "b:rdev") is disk byte
// b - base.
type identity struct {
	key  string
	base int64
}

type loopDev struct {
	dir, key string
	offset   int64
}

// partitionInUse reports, as ErrInUse, whether any block device showing
// bytes of the disk's range [start, end) is in use. The kernel decides: a
// block device that cannot be opened exclusively (EBUSY) is mounted, swap
// or held, in any mount namespace and for any filesystem. The devices are
// every one that shows the disk: the disk itself, its partitions, loop
// devices over the image file or the disk (at any offset, with or without
// their own partitions), and loop devices over those partitions.
func (d *Disk) partitionInUse(name string, start, end int64) error {
	exts, err := d.extents()
	if err != nil {
		return fmt.Errorf("checking whether %s is in use: %w", name, err)
	}
	for _, e := range exts {
		if e.disk || e.partitioned || e.off >= end || e.off+e.size <= start {
			continue
		}
		if err := deviceInUse(e.dir); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrInUse, name, err)
		}
	}
	return nil
}

// extents finds the block devices that show the disk.
func (d *Disk) extents() ([]extent, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(d.f.Fd()), &st); err != nil {
		return nil, fmt.Errorf("stat %s: %w", d.path, err)
	}
	loops := listLoops()
	var ids []identity
	seen := map[string]bool{}
	var exts []extent
	add := func(e extent) {
		if seen[e.dir] {
			return
		}
		seen[e.dir] = true
		exts = append(exts, e)
	}
	if d.block {
		key := blockKey(st.Rdev)
		ids = append(ids, identity{key: key})
		dir := filepath.Join(sysDevBlock, devNum(st.Rdev))
		if real, err := filepath.EvalSymlinks(dir); err == nil {
			add(extent{dir: real, size: d.size, disk: true})
			// A loop disk: other loops over its backing object show it too.
			for _, l := range loops {
				if l.dir == real {
					ids = append(ids, identity{key: l.key, base: l.offset})
				}
			}
		}
	} else {
		ids = append(ids, identity{key: fileKey(st.Dev, st.Ino)})
	}
	// Loops over the disk, partitions of what shows it, loops over those
	// partitions: grow until nothing new turns up.
	for i, done := 0, 0; ; {
		for _, id := range ids[done:] {
			for _, l := range loops {
				if l.key == id.key {
					add(extent{dir: l.dir, off: l.offset - id.base, size: sectors(l.dir, "size")})
				}
			}
		}
		done = len(ids)
		for ; i < len(exts); i++ {
			for _, p := range partitions(exts[i].dir) {
				exts[i].partitioned = true
				off := exts[i].off + sectors(p, "start")
				add(extent{dir: p, off: off, size: sectors(p, "size")})
				if dev, err := os.ReadFile(filepath.Join(p, "dev")); err == nil {
					ids = append(ids, identity{key: "b:" + strings.TrimSpace(string(dev)), base: -off})
				}
			}
		}
		if done == len(ids) {
			return exts, nil
		}
	}
}

func devNum(rdev uint64) string      { return fmt.Sprintf("%d:%d", unix.Major(rdev), unix.Minor(rdev)) }
func blockKey(rdev uint64) string    { return "b:" + devNum(rdev) }
func fileKey(dev, ino uint64) string { return fmt.Sprintf("f:%d:%d", dev, ino) }

// listLoops returns the attached loop devices with what backs them.
func listLoops() []loopDev {
	files, _ := filepath.Glob(filepath.Join(sysBlock, "loop*", "loop", "backing_file"))
	var out []loopDev
	for _, bf := range files {
		b, err := os.ReadFile(bf)
		if err != nil {
			continue // detached meanwhile
		}
		path := strings.TrimSuffix(strings.TrimSpace(string(b)), " (deleted)")
		var st unix.Stat_t
		if unix.Stat(path, &st) != nil {
			continue
		}
		key := fileKey(st.Dev, st.Ino)
		if st.Mode&unix.S_IFMT == unix.S_IFBLK {
			key = blockKey(st.Rdev)
		}
		dir := filepath.Dir(filepath.Dir(bf))
		if real, err := filepath.EvalSymlinks(dir); err == nil {
			dir = real
		}
		out = append(out, loopDev{dir: dir, key: key, offset: readInt(filepath.Join(dir, "loop", "offset"))})
	}
	return out
}

// partitions lists the sysfs directories of a block device's partitions.
func partitions(dir string) []string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		if _, err := os.Stat(filepath.Join(p, "partition")); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// sectors reads a sysfs size or start attribute (512-byte units) in bytes.
func sectors(dir, attr string) int64 { return readInt(filepath.Join(dir, attr)) * 512 }

func readInt(path string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return n
}

// deviceInUse opens the block device of a sysfs directory exclusively and
// closes it again; EBUSY means in use, and the error says by what when it
// can tell. Without a device node it falls back to mountinfo and holders.
func deviceInUse(dir string) error {
	name := filepath.Base(dir)
	devb, err := os.ReadFile(filepath.Join(dir, "dev"))
	if err != nil {
		return fmt.Errorf("/dev/%s: %w", name, err)
	}
	dev := strings.TrimSpace(string(devb))
	node := filepath.Join(devDir, name)
	fd, err := unix.Open(node, unix.O_RDONLY|unix.O_EXCL|unix.O_CLOEXEC, 0)
	switch {
	case err == nil:
		unix.Close(fd)
		return nil
	case errors.Is(err, unix.EBUSY):
		why := usedBy(dir, node, dev)
		if why == "" {
			why = "is opened exclusively by another program (a filesystem mounted in another namespace, or a volume manager)"
		}
		return fmt.Errorf("%s %s", node, why)
	case errors.Is(err, unix.ENOENT):
		if why := usedBy(dir, node, dev); why != "" {
			return fmt.Errorf("%s %s", node, why)
		}
		return nil
	default:
		return fmt.Errorf("opening %s exclusively: %w", node, err)
	}
}

// usedBy names what holds a device, for the error, or "" when it cannot
// tell.
func usedBy(dir, node, dev string) string {
	if mounts, err := readMounts(mountInfo); err == nil {
		if mp, ok := mounts[dev]; ok {
			return "is mounted at " + mp + "; unmount it first"
		}
		if mp, ok := mounts[node]; ok {
			return "is mounted at " + mp + "; unmount it first"
		}
	}
	if holders, _ := os.ReadDir(filepath.Join(dir, "holders")); len(holders) > 0 {
		return "is held by /dev/" + holders[0].Name()
	}
	if b, err := os.ReadFile(procSwaps); err == nil {
		for _, line := range strings.Split(string(b), "\n")[1:] {
			if f := strings.Fields(line); len(f) > 0 && unescapeMount(f[0]) == node {
				return "is in use as swap; swapoff it first"
			}
		}
	}
	return ""
}

// readMounts maps each mounted device, as "major:minor" and as the mount
// source path, to its first mount point, from a mountinfo file.
func readMounts(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m := map[string]string{}
	set := func(k, v string) {
		if _, seen := m[k]; !seen {
			m[k] = v
		}
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent major:minor root mountpoint options [optional...] - fstype source superopts
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		set(fields[2], mp)
		for i, f := range fields {
			if f == "-" && i+2 < len(fields) {
				set(unescapeMount(fields[i+2]), mp)
				break
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// unescapeMount undoes the octal escapes of mountinfo and /proc/swaps (\040
// for a space).
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
