package gpt

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Stream errors.
var (
	// ErrImageTooLarge: the image does not fit the passive partition.
	ErrImageTooLarge = errors.New("image larger than partition")
	// ErrTruncated: the image stream ended before its announced size, or
	// its reader reported an unexpected end.
	ErrTruncated = errors.New("image stream truncated")
)

const (
	// DefaultBufferSize is the size of each of the in-flight buffers;
	// memory use is bufferCount × this (4 MiB), whatever the image size.
	DefaultBufferSize = 1 << 20
	bufferCount       = 4
	// writebackStep is how much written data is handed to writeback at a
	// time: large enough for big disk requests, small enough that the
	// disk starts early.
	writebackStep = 8 << 20
	// flushStep is how often the written data is made durable while the
	// stream goes on.
	flushStep = 64 << 20
)

// Options describe one install.
type Options struct {
	Target
	// ImagePath is the image file; Image is used instead when set (a
	// pipe or network body), with Size its length when known.
	ImagePath string
	Image     io.Reader
	Size      int64
	// SHA256 is the expected hex checksum; empty skips the check.
	SHA256 string
	// Signature is an ed25519 signature by PublicKey over SignedMessage
	// of the image's SHA-256. Both or neither.
	Signature []byte
	PublicKey ed25519.PublicKey
	// Force installs even when the booted slot was never marked good,
	// overwriting what may be the only working fallback.
	Force bool
	// BufferSize overrides DefaultBufferSize.
	BufferSize int
	Logger     *slog.Logger
}

// Result is what an install did.
type Result struct {
	State
	Bytes    int64  `json:"bytes"`
	SHA256   string `json:"sha256"`
	Verified string `json:"verified"` // "sha256", "signature", "sha256+signature" or "none"
}

// Install writes an image into the passive /usr slot in one pass while
// hashing it, fsyncs it, verifies checksum and signature, and only then
// sets the passive slot's gptprio attributes so it boots next once:
// priority above the booted slot (see nextPriorities), tries 1,
// successful 0.
//
// Before the first byte of the slot changes, the slot is marked unbootable
// (priority 0, tries 0, successful 0, in both GPT copies, fsync'd), as
// update_engine does on Android and ChromeOS: from then on only a verified
// install makes it bootable again, and an install that fails or is
// interrupted (even by a crash) leaves it unbootable rather than a
// "fallback" holding half-written bytes. Errors found before anything is
// written leave the table as it was. With o.RecordDir the outcome is kept
// as an InstallRecord.
func Install(ctx context.Context, o Options) (Result, error) {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	want := ""
	if o.SHA256 != "" {
		var err error
		if want, err = ParseSHA256(o.SHA256); err != nil {
			return Result{}, err
		}
	}
	if (o.Signature == nil) != (o.PublicKey == nil) {
		return Result{}, fmt.Errorf("%w: a signature needs a public key and the other way round", ErrInvalidArgument)
	}
	if o.PublicKey != nil && len(o.PublicKey) != ed25519.PublicKeySize {
		return Result{}, fmt.Errorf("%w: ed25519 public key of %d bytes", ErrInvalidArgument, len(o.PublicKey))
	}
	if o.Image == nil && o.ImagePath == "" {
		return Result{}, fmt.Errorf("%w: no image", ErrInvalidArgument)
	}
	bufSize := o.BufferSize
	if bufSize <= 0 {
		bufSize = DefaultBufferSize
	}

	d, err := OpenDisk(ctx, o.Disk, true)
	if err != nil {
		return Result{}, err
	}
	defer d.Close()
	t, err := d.ReadTable()
	if err != nil {
		return Result{}, err
	}
	p, err := resolve(t, o.Target)
	if err != nil {
		return Result{}, fmt.Errorf("%s: %w", o.Disk, err)
	}
	if !p.booted.Successful() && !o.Force {
		return Result{}, fmt.Errorf("%w: %s is booted but not marked good, so %s may be the only working slot; mark it good first or force",
			ErrBootedNotGood, p.booted.Name, p.passive.Name)
	}

	src, size := o.Image, o.Size
	if src == nil {
		f, err := os.Open(o.ImagePath)
		if err != nil {
			return Result{}, fmt.Errorf("open image: %w", err)
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return Result{}, fmt.Errorf("stat image: %w", err)
		}
		src = f
		if fi.Mode().IsRegular() {
			size = fi.Size()
		}
	}
	ss := int64(t.SectorSize)
	base, limit := int64(p.passive.FirstLBA)*ss, int64(p.passive.Sectors())*ss
	if err := d.partitionInUse(p.passive.Name, base, base+limit); err != nil {
		return Result{}, err
	}
	if size > limit {
		return Result{}, fmt.Errorf("%w: image of %d bytes, %s holds %d", ErrImageTooLarge, size, p.passive.Name, limit)
	}
	log.InfoContext(ctx, "installing image", "disk", o.Disk, "slot", p.passive.Name, "partuuid", p.passive.ID.String(), "size", size)

	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	if err := markUnbootable(d, t, p.passive); err != nil {
		return Result{}, err
	}
	rec := InstallRecord{Disk: o.Disk, Slot: p.passive.Name, PARTUUID: p.passive.ID.String(), Result: InstallStarted, Started: time.Now()}
	// The record explains the mark; the mark alone keeps the slot from
	// booting, so an unwritable record does not stop the install.
	if err := writeInstallRecord(o.RecordDir, rec); err != nil {
		log.WarnContext(ctx, "cannot record the install", "error", err)
	}
	// The verified record is written before the table makes the slot
	// bootable, so that a crash in between leaves an unbootable slot with
	// a true record rather than a bootable one recorded as unfinished.
	verified := func(n int64, sum, how string) {
		rec.Result, rec.Finished, rec.Bytes, rec.SHA256, rec.Verified = InstallVerified, time.Now(), n, sum, how
		if err := writeInstallRecord(o.RecordDir, rec); err != nil {
			log.WarnContext(ctx, "cannot record the install", "error", err)
		}
	}
	job := installJob{o: o, d: d, p: p, src: src, size: size, want: want, bufSize: bufSize, base: base, limit: limit, log: log}
	res, err := job.run(ctx, verified)
	if err != nil {
		rec.Result, rec.Finished, rec.Error = InstallFailed, time.Now(), err.Error()
		rec.Bytes, rec.SHA256, rec.Verified = 0, "", ""
		log.ErrorContext(ctx, "install failed; the slot stays unbootable", "slot", p.passive.Name, "error", err)
		if werr := writeInstallRecord(o.RecordDir, rec); werr != nil {
			log.WarnContext(ctx, "cannot record the install", "error", werr)
		}
		return Result{}, err
	}
	res.State = withRecord(res.State, o.RecordDir)
	return res, nil
}

// markUnbootable gives the passive slot priority 0, tries 0, successful 0
// and writes both GPT copies (each fsync'd) before its bytes change.
func markUnbootable(d *Disk, t *Table, passive Partition) error {
	if err := t.SetPrio(passive.Index, 0, 0, false); err != nil {
		return err
	}
	if err := d.WriteTable(t); err != nil {
		return fmt.Errorf("mark %s unbootable before writing it: %w", passive.Name, err)
	}
	return nil
}

// installJob is one install whose checks passed and whose target slot is
// marked unbootable.
type installJob struct {
	o           Options
	d           *Disk
	p           pair
	src         io.Reader
	size        int64 // of src when known, else 0
	want        string
	bufSize     int
	base, limit int64 // the passive partition, in bytes
	log         *slog.Logger
}

// run streams, verifies and stages the image. verified is called once the
// image verified, before the table makes the slot bootable.
func (j installJob) run(ctx context.Context, verified func(n int64, sum, how string)) (Result, error) {
	o, d, p, src, size, want, log := j.o, j.d, j.p, j.src, j.size, j.want, j.log
	base, limit, bufSize := j.base, j.limit, j.bufSize
	start := time.Now()
	n, digest, err := streamHashed(ctx, d.f, base, limit, src, bufSize)
	log.DebugContext(ctx, "image streamed", "bytes", n, "elapsed", time.Since(start), "error", err)
	if err != nil {
		if ctx.Err() != nil {
			return Result{}, fmt.Errorf("install into %s interrupted after %d bytes: %w", p.passive.Name, n, err)
		}
		return Result{}, fmt.Errorf("install into %s: %w", p.passive.Name, err)
	}
	switch {
	case n == 0:
		return Result{}, fmt.Errorf("%w: the image is empty", ErrTruncated)
	case size > 0 && n < size:
		return Result{}, fmt.Errorf("%w: got %d of %d bytes", ErrTruncated, n, size)
	case size > 0 && n > size:
		return Result{}, fmt.Errorf("image has %d bytes, %d announced", n, size)
	}
	sum := hex.EncodeToString(digest)
	verifiedBy, err := verify(sum, want, o.Signature, o.PublicKey)
	if err != nil {
		return Result{}, err
	}
	if verifiedBy == "none" {
		log.WarnContext(ctx, "image installed without checksum or signature", "sha256", sum)
	}

	// Re-read so a table changed behind our back (by a tool that ignores
	// the lock) is noticed rather than overwritten.
	t2, err := d.ReadTable()
	if err != nil {
		return Result{}, err
	}
	p2, err := resolve(t2, o.Target)
	if err != nil {
		return Result{}, fmt.Errorf("%s: %w", o.Disk, err)
	}
	if p2.passive.Index != p.passive.Index || p2.passive.ID != p.passive.ID ||
		p2.passive.FirstLBA != p.passive.FirstLBA || p2.passive.LastLBA != p.passive.LastLBA {
		return Result{}, fmt.Errorf("%w: %s changed while the image was written", ErrCorrupt, p.passive.Name)
	}
	pp, bp := nextPriorities(p2.booted.Priority())
	if bp != p2.booted.Priority() {
		if err := t2.SetPrio(p2.booted.Index, bp, p2.booted.Tries(), p2.booted.Successful()); err != nil {
			return Result{}, err
		}
	}
	if err := t2.SetPrio(p2.passive.Index, pp, 1, false); err != nil {
		return Result{}, err
	}
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	verified(n, sum, verifiedBy)
	if err := d.WriteTable(t2); err != nil {
		return Result{}, err
	}
	st, err := reread(t2, o.Disk, p2)
	if err != nil {
		return Result{}, err
	}
	log.InfoContext(ctx, "image staged", "slot", st.Passive.String(), "sha256", sum, "verified", verifiedBy)
	return Result{State: st, Bytes: n, SHA256: sum, Verified: verifiedBy}, nil
}

// streamDst is where streamHashed writes: the disk.
type streamDst interface {
	io.WriterAt
	Sync() error
}

// fder is implemented by *os.File. With it, writeback of the written data
// starts every writebackStep (sync_file_range) and a flusher goroutine
// makes it durable every flushStep (fdatasync), so the disk, and on a
// virtual machine the host's cache flush, work while the image is still
// being read and hashed, and the final fsync has little left to do.
type fder interface{ Fd() uintptr }

// streamHashed copies src to dst at base in one pass, hashing as it goes,
// and fsyncs what it wrote. The caller's goroutine reads and writes, as dd
// does; one goroutine computes the hash of the same buffers behind it, in
// order. Memory is bufferCount buffers of bufSize, whatever the image size.
// It never writes at or past base+limit: a chunk that would is refused with
// ErrImageTooLarge before any of it is written.
func streamHashed(ctx context.Context, dst streamDst, base, limit int64, src io.Reader, bufSize int) (int64, []byte, error) {
	free := make(chan []byte, bufferCount)
	for range bufferCount {
		free <- make([]byte, bufSize)
	}
	hashCh := make(chan []byte, bufferCount)
	h := sha256.New()
	hashed := make(chan struct{})
	go func() {
		defer close(hashed)
		for b := range hashCh {
			h.Write(b)
			free <- b[:cap(b)]
		}
	}()

	fd := -1
	if f, ok := dst.(fder); ok {
		fd = int(f.Fd())
	}
	// The flusher's first error is kept: the kernel reports a writeback
	// error to an open file once, so the final fsync might not see it.
	flush := make(chan struct{}, 1)
	flushed := make(chan error, 1)
	go func() {
		var ferr error
		for range flush {
			if ferr == nil && fd >= 0 {
				if err := unix.Fdatasync(fd); err != nil {
					ferr = fmt.Errorf("fdatasync: %w", err)
				}
			}
		}
		flushed <- ferr
	}()

	reads := newCtxFiller(ctx, src)
	defer reads.close()

	var total, started, synced int64
	err := func() error {
		for {
			// Checked first: select picks at random among ready cases.
			if err := ctx.Err(); err != nil {
				return err
			}
			var buf []byte
			select {
			case <-ctx.Done():
				return ctx.Err()
			case buf = <-free:
			}
			n, rerr := reads.fill(buf)
			if rerr != nil && ctx.Err() != nil {
				// Cancelled while the read blocked: stop now, whatever
				// the abandoned read brings later.
				return ctx.Err()
			}
			if n > 0 {
				if int64(n) > limit-total {
					return fmt.Errorf("%w: more than the partition's %d bytes", ErrImageTooLarge, limit)
				}
				if _, err := dst.WriteAt(buf[:n], base+total); err != nil {
					return fmt.Errorf("write at byte %d of the partition: %w", total, err)
				}
				total += int64(n)
				if fd >= 0 && total-started >= writebackStep {
					// Only a hint: where it is not supported the fsync
					// below does all the work.
					_ = unix.SyncFileRange(fd, base+started, total-started, unix.SYNC_FILE_RANGE_WRITE)
					started = total
				}
				if total-synced >= flushStep {
					select {
					case flush <- struct{}{}:
					default: // a flush is pending; it will cover this too
					}
					synced = total
				}
				hashCh <- buf[:n]
			}
			switch {
			case rerr == io.EOF:
				return nil
			case errors.Is(rerr, io.ErrUnexpectedEOF):
				return fmt.Errorf("%w after %d bytes: %w", ErrTruncated, total, rerr)
			case rerr != nil:
				return fmt.Errorf("read image after %d bytes: %w", total, rerr)
			}
		}
	}()
	close(hashCh)
	close(flush)
	if ferr := <-flushed; err == nil && ferr != nil {
		err = ferr
	}
	if err == nil {
		if serr := dst.Sync(); serr != nil {
			err = fmt.Errorf("sync: %w", serr)
		}
	}
	<-hashed
	if err != nil {
		return total, nil, err
	}
	return total, h.Sum(nil), nil
}

// ctxFiller runs fill in its own goroutine so that a cancelled context ends
// the install at once even while a read blocks: standard input from a
// terminal, or a pipe whose writer is silent, is in blocking mode and
// ignores deadlines. An abandoned read ends when its source does (at
// process exit for the command line); its buffer is never used again.
// Where the source supports deadlines (a pollable *os.File), the blocked
// read is also woken up.
type ctxFiller struct {
	ctx     context.Context
	reqs    chan []byte
	results chan fillResult
	stop    func() bool
}

type fillResult struct {
	n   int
	err error
}

func newCtxFiller(ctx context.Context, src io.Reader) *ctxFiller {
	c := &ctxFiller{ctx: ctx, reqs: make(chan []byte), results: make(chan fillResult, 1), stop: func() bool { return false }}
	if f, ok := src.(interface{ SetReadDeadline(time.Time) error }); ok {
		c.stop = context.AfterFunc(ctx, func() { _ = f.SetReadDeadline(time.Now()) })
	}
	go func() {
		for b := range c.reqs {
			n, err := fill(src, b)
			c.results <- fillResult{n, err}
		}
	}()
	return c
}

// fill is fill(src, buf), or ctx.Err() as soon as ctx ends.
func (c *ctxFiller) fill(buf []byte) (int, error) {
	select {
	case c.reqs <- buf:
	case <-c.ctx.Done():
		return 0, c.ctx.Err()
	}
	select {
	case r := <-c.results:
		return r.n, r.err
	case <-c.ctx.Done():
		return 0, c.ctx.Err()
	}
}

func (c *ctxFiller) close() {
	c.stop()
	close(c.reqs)
}

// maxIdleReads bounds consecutive empty reads, as bufio does.
const maxIdleReads = 100

// fill reads until buf is full, the reader ends (io.EOF, with n possibly
// above zero) or fails. Unlike io.ReadFull it passes the reader's own
// errors through, so a source that reports io.ErrUnexpectedEOF is told
// apart from a short last block.
func fill(r io.Reader, buf []byte) (int, error) {
	n, idle := 0, 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
		if m > 0 {
			idle = 0
		} else if idle++; idle >= maxIdleReads {
			// A reader stuck at (0, nil) would otherwise spin forever.
			return n, io.ErrNoProgress
		}
	}
	return n, nil
}
