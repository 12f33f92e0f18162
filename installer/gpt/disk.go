package gpt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Disk is an open block device or disk image file.
type Disk struct {
	f          *os.File
	path       string
	size       int64
	sectorSize int // 0: detect from the GPT (image files)
	block      bool
}

// OpenDisk opens path for reading, or for reading and writing. A writable
// disk is flock'ed exclusively for as long as it is open, which keeps two
// offpeak processes from interleaving table writes and makes udev hold off
// probing a block device while it changes. Waiting for a lock held by
// another process ends with ErrBusy after lockWait or when ctx ends.
func OpenDisk(ctx context.Context, path string, writable bool) (*Disk, error) {
	flag := os.O_RDONLY
	if writable {
		flag = os.O_RDWR
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, fmt.Errorf("open disk: %w", err)
	}
	d := &Disk{f: f, path: path}
	if err := d.init(ctx, writable); err != nil {
		f.Close()
		return nil, err
	}
	return d, nil
}

func (d *Disk) init(ctx context.Context, writable bool) error {
	fi, err := d.f.Stat()
	if err != nil {
		return fmt.Errorf("stat %s: %w", d.path, err)
	}
	switch {
	case fi.Mode().IsRegular():
		d.size = fi.Size()
	case fi.Mode()&os.ModeDevice != 0 && fi.Mode()&os.ModeCharDevice == 0:
		d.block = true
		end, err := d.f.Seek(0, io.SeekEnd)
		if err != nil {
			return fmt.Errorf("size of %s: %w", d.path, err)
		}
		d.size = end
		if ss, err := unix.IoctlGetInt(int(d.f.Fd()), unix.BLKSSZGET); err == nil {
			d.sectorSize = ss
		}
	default:
		return fmt.Errorf("%w: %s is neither a block device nor a regular file", ErrInvalidArgument, d.path)
	}
	if writable {
		return d.lock(ctx)
	}
	return nil
}

// lockWait bounds how long OpenDisk waits for another holder of the disk
// lock (udev holds a shared one for a moment while it probes).
const lockWait = 10 * time.Second

func (d *Disk) lock(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, lockWait)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		err := unix.Flock(int(d.f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			return fmt.Errorf("lock %s: %w", d.path, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s is locked by another process: %w", d.path, ErrBusy)
		case <-tick.C:
		}
	}
}

// ErrBusy: another process holds the disk's lock.
var ErrBusy = errors.New("disk busy")

// Path is the name the disk was opened by.
func (d *Disk) Path() string { return d.path }

// Size is the disk size in bytes.
func (d *Disk) Size() int64 { return d.size }

// IsBlockDevice reports whether the disk is a block device (not an image).
func (d *Disk) IsBlockDevice() bool { return d.block }

// ReadTable parses the disk's GPT.
func (d *Disk) ReadTable() (*Table, error) {
	t, err := Parse(d.f, d.size, d.sectorSize)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", d.path, err)
	}
	return t, nil
}

// WriteTable stores t on the disk (backup first, fsync, then primary).
func (d *Disk) WriteTable(t *Table) error {
	if err := t.Write(d.f); err != nil {
		return fmt.Errorf("%s: %w", d.path, err)
	}
	return nil
}

// Close releases the lock and the file.
func (d *Disk) Close() error { return d.f.Close() }
