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
	"sync"
	"sync/atomic"
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
	// memory use is about bufferCount × this, whatever the image size.
	DefaultBufferSize = 1 << 20
	bufferCount       = 4
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
// successful 0. On any error the partition table is left as it was; the
// passive partition's contents are then undefined, but its attributes
// still describe the old state (see README: failed installs).
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
	if size > limit {
		return Result{}, fmt.Errorf("%w: image of %d bytes, %s holds %d", ErrImageTooLarge, size, p.passive.Name, limit)
	}
	log.InfoContext(ctx, "installing image", "disk", o.Disk, "slot", p.passive.Name, "partuuid", p.passive.ID.String(), "size", size)

	n, digest, err := streamHashed(ctx, d.f, base, limit, src, bufSize)
	if err != nil {
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
	if err := d.f.Sync(); err != nil {
		return Result{}, fmt.Errorf("sync %s: %w", o.Disk, err)
	}
	sum := hex.EncodeToString(digest)
	verified, err := verify(sum, want, o.Signature, o.PublicKey)
	if err != nil {
		return Result{}, err
	}
	if verified == "none" {
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
	if err := d.WriteTable(t2); err != nil {
		return Result{}, err
	}
	st, err := reread(t2, o.Disk, p2)
	if err != nil {
		return Result{}, err
	}
	log.InfoContext(ctx, "image staged", "slot", st.Passive.String(), "sha256", sum, "verified", verified)
	return Result{State: st, Bytes: n, SHA256: sum, Verified: verified}, nil
}

// chunk is one buffer in flight; it goes back to the free list once both
// the hasher and the writer are done with it.
type chunk struct {
	buf     []byte
	n       int
	off     int64
	pending atomic.Int32
}

// streamHashed copies src to dst at base in one pass, hashing as it goes:
// the caller's goroutine reads, one goroutine hashes and one writes, each
// in order, over a fixed set of buffers. It never writes at or past
// base+limit: a chunk that would is refused with ErrImageTooLarge before
// any of it is written.
func streamHashed(ctx context.Context, dst io.WriterAt, base, limit int64, src io.Reader, bufSize int) (int64, []byte, error) {
	free := make(chan *chunk, bufferCount)
	for range bufferCount {
		free <- &chunk{buf: make([]byte, bufSize)}
	}
	hashCh := make(chan *chunk, bufferCount)
	writeCh := make(chan *chunk, bufferCount)
	release := func(c *chunk) {
		if c.pending.Add(-1) == 0 {
			free <- c
		}
	}

	var (
		failOnce sync.Once
		failErr  error
		failed   = make(chan struct{})
	)
	fail := func(err error) {
		failOnce.Do(func() { failErr = err; close(failed) })
	}

	h := sha256.New()
	var wg sync.WaitGroup
	wg.Go(func() {
		for c := range hashCh {
			h.Write(c.buf[:c.n])
			release(c)
		}
	})
	wg.Go(func() {
		broken := false
		for c := range writeCh {
			if !broken {
				if _, err := dst.WriteAt(c.buf[:c.n], base+c.off); err != nil {
					fail(fmt.Errorf("write at byte %d of the partition: %w", c.off, err))
					broken = true
				}
			}
			release(c)
		}
	})

	var total int64
	err := func() error {
		for {
			var c *chunk
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-failed:
				return nil
			case c = <-free:
			}
			n, rerr := fill(src, c.buf)
			if n > 0 {
				if int64(n) > limit-total {
					free <- c
					return fmt.Errorf("%w: more than the partition's %d bytes", ErrImageTooLarge, limit)
				}
				c.n, c.off = n, total
				c.pending.Store(2)
				total += int64(n)
				hashCh <- c
				writeCh <- c
			} else {
				free <- c
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
	close(writeCh)
	wg.Wait()
	if err == nil {
		select {
		case <-failed:
			err = failErr
		default:
		}
	}
	if err != nil {
		return total, nil, err
	}
	return total, h.Sum(nil), nil
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
