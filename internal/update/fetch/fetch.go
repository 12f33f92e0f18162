// Package fetch downloads an update payload as a stream: the caller reads
// the payload from a Download (an io.Reader) and hands it straight to the
// installer that writes the passive slot, so no copy of the image is kept
// on disk. The stream is hashed as it goes; the final Read reports
// ErrHashMismatch instead of io.EOF when the bytes are not the expected
// ones, so a consumer that treats any error as a failed install never
// accepts a bad image.
//
// A dropped connection is resumed with an HTTP Range request, guarded by
// If-Range (the first answer's strong ETag or Last-Modified) and checked
// against the Content-Range the server sends. A server that ignores the
// range is read again from byte 0: the bytes already handed out are
// re-read, hashed and compared, not handed out twice.
package fetch

import (
	"context"
	"crypto/sha1" //nolint:gosec // an extra check next to SHA-256, never trusted alone
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// Errors callers branch on.
var (
	// ErrHashMismatch: the downloaded bytes do not have the expected
	// SHA-256 (or SHA-1). Returned by the final Read in place of io.EOF.
	ErrHashMismatch = errors.New("download does not match its hash")
	// ErrSizeMismatch: the server announced or sent another size than
	// expected.
	ErrSizeMismatch = errors.New("download size mismatch")
	// ErrChanged: on resuming, the server's copy is no longer the one the
	// download started with (another ETag, another Content-Range total,
	// or other bytes where the download restarted from 0).
	ErrChanged = errors.New("download changed on the server")
	// ErrHTTPStatus: the server answered with a status that is not worth
	// retrying (404, 403, 416 after a resume...).
	ErrHTTPStatus = errors.New("unexpected HTTP status")
	// ErrInterrupted: the download kept failing; wraps the last error.
	ErrInterrupted = errors.New("download interrupted")
	// ErrInvalidTarget: the Target lacks a usable URL, size or hash.
	ErrInvalidTarget = errors.New("invalid download target")
	// ErrClosed: Read after Close.
	ErrClosed = errors.New("download closed")
)

// Limiter paces the download; *rate.Limiter implements it (see
// NewLimiter). Reads are at most Burst() bytes so WaitN never fails for
// size.
type Limiter interface {
	WaitN(ctx context.Context, n int) error
	Burst() int
}

// NewLimiter returns a limiter of bytesPerSecond with a burst of a quarter
// second (at least 4 KiB, at most 1 MiB).
func NewLimiter(bytesPerSecond int64) *rate.Limiter {
	burst := min(max(bytesPerSecond/4, 4<<10), 1<<20)
	return rate.NewLimiter(rate.Limit(bytesPerSecond), int(burst))
}

// Progress is reported after every chunk read.
type Progress struct {
	// Done counts the payload's bytes handed to the reader so far.
	Done int64
	// Total is the payload's size.
	Total int64
	// Resumes counts reconnections (Range requests and restarts).
	Resumes int
}

// Target is what to download and what it must be.
type Target struct {
	URL string
	// Size in bytes; required.
	Size int64
	// SHA256 of the whole download; required (32 bytes).
	SHA256 []byte
	// SHA1, when known, is checked too.
	SHA1 []byte
}

// Defaults.
const (
	DefaultMaxRetries = 5
	maxBackoff        = 30 * time.Second
	chunk             = 256 << 10
)

// Fetcher holds the settings shared by downloads. The zero value is not
// usable: HTTP is required.
type Fetcher struct {
	// HTTP sends the requests. Its Timeout must be zero or cover a whole
	// download; bound a stalled connection with the transport's
	// ResponseHeaderTimeout and the context instead.
	HTTP *http.Client
	// Limiter, when set, paces the reads.
	Limiter Limiter
	// Progress, when set, is called from the reading goroutine after
	// every chunk; it must return quickly.
	Progress func(Progress)
	// MaxRetries bounds consecutive failed attempts that made no
	// progress; DefaultMaxRetries when 0.
	MaxRetries int
	// Backoff returns the wait before retry n (1, 2, ...); nil means
	// 1s, 2s, 4s ... up to 30s. A wait of 0 retries at once.
	Backoff func(n int) time.Duration
	Logger  *slog.Logger
}

// Download is one payload being read. Read and Close may be called from
// different goroutines; Read itself is not for concurrent use.
type Download struct {
	f      *Fetcher
	t      Target
	ctx    context.Context
	cancel context.CancelFunc
	log    *slog.Logger

	mu      sync.Mutex // guards body, closed and reading against Close
	body    io.ReadCloser
	closed  bool
	reading bool

	done     int64 // bytes handed to the reader
	sha256   hash.Hash
	sha1     hash.Hash
	etag     string // strong ETag of the first answer
	lastMod  string
	eof      bool  // the body ended exactly at Size
	err      error // sticky
	failures int   // consecutive attempts without progress
	lastErr  error
	resumes  int

	// A restart from byte 0: replay bytes are re-read and compared with
	// replaySum, the hash of what was handed out before.
	replay     int64
	replayHash hash.Hash
	replaySum  []byte
}

// Open starts a download: it sends the first request (retrying as Read
// does) and returns once the server answered with the payload's headers.
// ctx governs the whole download; cancel it, or call Close, to stop.
func (f *Fetcher) Open(ctx context.Context, t Target) (*Download, error) {
	if f.HTTP == nil {
		return nil, fmt.Errorf("%w: no HTTP client", ErrInvalidTarget)
	}
	u, err := url.Parse(t.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("%w: URL %q is not an absolute http(s) URL", ErrInvalidTarget, redact(t.URL))
	}
	if t.Size <= 0 {
		return nil, fmt.Errorf("%w: size %d", ErrInvalidTarget, t.Size)
	}
	if len(t.SHA256) != sha256.Size {
		return nil, fmt.Errorf("%w: a SHA-256 of %d bytes, want 32", ErrInvalidTarget, len(t.SHA256))
	}
	if t.SHA1 != nil && len(t.SHA1) != sha1.Size {
		return nil, fmt.Errorf("%w: a SHA-1 of %d bytes, want 20", ErrInvalidTarget, len(t.SHA1))
	}
	log := f.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dctx, cancel := context.WithCancel(ctx)
	d := &Download{f: f, t: t, ctx: dctx, cancel: cancel, log: log, sha256: sha256.New()}
	if t.SHA1 != nil {
		d.sha1 = sha1.New() //nolint:gosec // see import
	}
	for {
		err := d.connect()
		if err == nil {
			break
		}
		if !d.retryable(err) {
			cancel()
			return nil, err
		}
	}
	d.progress()
	return d, nil
}

// Read returns the payload's next bytes. After the last byte it returns
// io.EOF only if size and hashes match, ErrHashMismatch otherwise.
func (d *Download) Read(p []byte) (int, error) {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return 0, ErrClosed
	}
	d.reading = true
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		d.reading = false
		if d.closed && d.body != nil {
			d.body.Close()
			d.body = nil
		}
		d.mu.Unlock()
	}()

	if len(p) == 0 {
		return 0, nil
	}
	for {
		if d.err != nil {
			return 0, d.err
		}
		if d.eof {
			d.err = d.verify()
			if d.err == nil {
				d.err = io.EOF
			}
			return 0, d.err
		}
		if d.body == nil {
			if err := d.connect(); err != nil && !d.retryable(err) {
				d.err = err
			}
			continue
		}
		n, err := d.readBody(p)
		if n > 0 {
			return n, nil
		}
		if err != nil {
			d.err = err
		}
	}
}

// readBody reads from the current body into p. It returns the number of
// new payload bytes in p; replayed bytes and dropped connections are
// handled here (0, nil), fatal problems returned.
func (d *Download) readBody(p []byte) (int, error) {
	want := len(p)
	if d.f.Limiter != nil {
		want = min(want, max(d.f.Limiter.Burst(), 1))
	}
	want = min(want, chunk)
	if d.replay > 0 {
		want = int(min(int64(want), d.replay))
	} else if rest := d.t.Size - d.done; rest == 0 {
		// At Size: one more read must see the end, not more bytes.
		want = 1
	}
	n, rerr := d.body.Read(p[:want])
	if n > 0 {
		d.failures = 0
	}
	if d.replay > 0 && n > 0 {
		d.replayHash.Write(p[:n])
		d.replay -= int64(n)
		if d.replay == 0 && string(d.replayHash.Sum(nil)) != string(d.replaySum) {
			return 0, fmt.Errorf("%w: the first %d bytes differ from those read before the restart", ErrChanged, d.done)
		}
		n = 0
	}
	if n > 0 {
		if int64(n) > d.t.Size-d.done {
			return 0, fmt.Errorf("%w: the server sent more than %d bytes", ErrSizeMismatch, d.t.Size)
		}
		if d.f.Limiter != nil {
			if err := d.f.Limiter.WaitN(d.ctx, n); err != nil {
				return 0, d.ctxErr(err)
			}
		}
		d.sha256.Write(p[:n])
		if d.sha1 != nil {
			d.sha1.Write(p[:n])
		}
		d.done += int64(n)
		d.progress()
	}
	switch {
	case rerr == nil:
	case rerr == io.EOF && d.replay == 0 && d.done == d.t.Size:
		d.closeBody()
		d.eof = true
	default:
		if err := d.ctx.Err(); err != nil {
			return n, d.ctxErr(err)
		}
		if rerr == io.EOF {
			rerr = io.ErrUnexpectedEOF
		}
		d.log.InfoContext(d.ctx, "download connection dropped", "url", redact(d.t.URL), "done", d.done, "total", d.t.Size, "error", rerr)
		d.closeBody()
		d.lastErr = fmt.Errorf("after %d of %d bytes: %w", d.done, d.t.Size, rerr)
		d.failures++
	}
	return n, nil
}

// connect sends a request for the rest of the payload and installs its
// body. On failure it returns the error; retryable tells whether to try
// again.
func (d *Download) connect() error {
	if d.failures > 0 {
		limit := d.f.MaxRetries
		if limit <= 0 {
			limit = DefaultMaxRetries
		}
		if d.failures > limit {
			return fmt.Errorf("%w: %d attempts failed in a row: %w", ErrInterrupted, d.failures, d.lastErr)
		}
		if err := d.wait(d.failures); err != nil {
			return err
		}
	}
	req, err := http.NewRequestWithContext(d.ctx, http.MethodGet, d.t.URL, nil)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidTarget, err)
	}
	first := d.done == 0 && d.etag == "" && d.lastMod == "" && d.resumes == 0 && d.failures == 0
	resuming := d.done > 0
	if resuming {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(d.done, 10)+"-")
		switch {
		case d.etag != "":
			req.Header.Set("If-Range", d.etag)
		case d.lastMod != "":
			req.Header.Set("If-Range", d.lastMod)
		}
	}
	// Compressed transfer would hide the payload's own bytes and sizes.
	req.Header.Set("Accept-Encoding", "identity")
	resp, err := d.f.HTTP.Do(req)
	if err != nil {
		if cerr := d.ctx.Err(); cerr != nil {
			return d.ctxErr(cerr)
		}
		d.failures++
		d.lastErr = fmt.Errorf("GET %s: %w", redact(d.t.URL), bareErr(err))
		return d.lastErr
	}
	if !first {
		d.resumes++
	}
	if err := d.accept(resp, resuming); err != nil {
		resp.Body.Close()
		return err
	}
	d.mu.Lock()
	closed := d.closed
	if !closed {
		d.body = resp.Body
	}
	d.mu.Unlock()
	if closed {
		resp.Body.Close()
		return ErrClosed
	}
	return nil
}

// accept checks an answer against the download so far.
func (d *Download) accept(resp *http.Response, resuming bool) error {
	etag := strongETag(resp.Header.Get("ETag"))
	switch {
	case resp.StatusCode == http.StatusPartialContent && resuming:
		start, end, total, err := contentRange(resp.Header.Get("Content-Range"))
		if err != nil {
			return fmt.Errorf("%w: resumed answer: %w", ErrChanged, err)
		}
		if total != d.t.Size {
			return fmt.Errorf("%w: Content-Range total %d, expected %d", ErrChanged, total, d.t.Size)
		}
		if start != d.done || end != d.t.Size-1 {
			return fmt.Errorf("%w: Content-Range bytes %d-%d, asked for %d-%d", ErrChanged, start, end, d.done, d.t.Size-1)
		}
		if d.etag != "" && etag != d.etag {
			return fmt.Errorf("%w: ETag %s, the download started with %s", ErrChanged, etag, d.etag)
		}
		d.log.InfoContext(d.ctx, "download resumed", "url", redact(d.t.URL), "from", d.done, "total", d.t.Size)
		return nil
	case resp.StatusCode == http.StatusOK:
		if resp.ContentLength >= 0 && resp.ContentLength != d.t.Size {
			return fmt.Errorf("%w: the server announced %d bytes, expected %d", ErrSizeMismatch, resp.ContentLength, d.t.Size)
		}
		if resuming {
			// The range was ignored, or If-Range found another copy.
			if d.etag != "" && etag != "" && etag != d.etag {
				return fmt.Errorf("%w: ETag %s, the download started with %s", ErrChanged, etag, d.etag)
			}
			d.replay = d.done
			d.replaySum = d.sha256.Sum(nil)
			d.replayHash = sha256.New()
			d.log.InfoContext(d.ctx, "download restarted from byte 0: the server ignored the range", "url", redact(d.t.URL), "replay", d.done)
		} else {
			d.etag = etag
			d.lastMod = resp.Header.Get("Last-Modified")
		}
		return nil
	case resp.StatusCode >= 500 || resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode == http.StatusTooManyRequests:
		d.failures++
		d.lastErr = fmt.Errorf("%w: GET %s: %s", ErrHTTPStatus, redact(d.t.URL), resp.Status)
		return d.lastErr
	default:
		return fmt.Errorf("%w: GET %s: %s", ErrHTTPStatus, redact(d.t.URL), resp.Status)
	}
}

// retryable reports whether connect's error may go away by trying again.
func (d *Download) retryable(err error) bool {
	return err == d.lastErr && d.ctx.Err() == nil
}

func (d *Download) wait(n int) error {
	var w time.Duration
	if d.f.Backoff != nil {
		w = d.f.Backoff(n)
	} else {
		w = min(time.Second<<min(n-1, 5), maxBackoff)
	}
	if w <= 0 {
		return d.ctxErr(d.ctx.Err())
	}
	t := time.NewTimer(w)
	defer t.Stop()
	select {
	case <-d.ctx.Done():
		return d.ctxErr(d.ctx.Err())
	case <-t.C:
		return nil
	}
}

func (d *Download) ctxErr(err error) error {
	if err == nil {
		return nil
	}
	d.mu.Lock()
	closed := d.closed
	d.mu.Unlock()
	if closed {
		return ErrClosed
	}
	return fmt.Errorf("download after %d of %d bytes: %w", d.done, d.t.Size, err)
}

func (d *Download) verify() error {
	if sum := d.sha256.Sum(nil); string(sum) != string(d.t.SHA256) {
		return fmt.Errorf("%w: SHA-256 %x, expected %x", ErrHashMismatch, sum, d.t.SHA256)
	}
	if d.sha1 != nil {
		if sum := d.sha1.Sum(nil); string(sum) != string(d.t.SHA1) {
			return fmt.Errorf("%w: SHA-1 %x, expected %x", ErrHashMismatch, sum, d.t.SHA1)
		}
	}
	return nil
}

func (d *Download) progress() {
	if d.f.Progress != nil {
		d.f.Progress(Progress{Done: d.done, Total: d.t.Size, Resumes: d.resumes})
	}
}

func (d *Download) closeBody() {
	d.mu.Lock()
	b := d.body
	d.body = nil
	d.mu.Unlock()
	if b != nil {
		b.Close()
	}
}

// Close stops the download and releases its connection. It may be called
// while another goroutine is in Read; that Read then fails.
func (d *Download) Close() error {
	d.mu.Lock()
	d.closed = true
	var b io.ReadCloser
	if !d.reading {
		b, d.body = d.body, nil
	}
	d.mu.Unlock()
	d.cancel()
	if b != nil {
		b.Close()
	}
	return nil
}

// Done is the number of bytes handed out so far. Not for use while Read
// runs in another goroutine; Progress reports it from there.
func (d *Download) Done() int64 { return d.done }

// Resumes counts reconnections so far (same caveat as Done).
func (d *Download) Resumes() int { return d.resumes }

// strongETag returns a strong ETag, or "" for none or a weak one (If-Range
// must not use a weak validator).
func strongETag(s string) string {
	s = strings.TrimSpace(s)
	if s == "" || strings.HasPrefix(s, "W/") {
		return ""
	}
	return s
}

// contentRange parses "bytes START-END/TOTAL".
func contentRange(s string) (start, end, total int64, err error) {
	rest, ok := strings.CutPrefix(s, "bytes ")
	if !ok {
		return 0, 0, 0, fmt.Errorf("Content-Range %q", s)
	}
	rng, tot, ok := strings.Cut(rest, "/")
	if !ok {
		return 0, 0, 0, fmt.Errorf("Content-Range %q", s)
	}
	a, b, ok := strings.Cut(rng, "-")
	if !ok {
		return 0, 0, 0, fmt.Errorf("Content-Range %q", s)
	}
	start, err1 := strconv.ParseInt(a, 10, 64)
	end, err2 := strconv.ParseInt(b, 10, 64)
	total, err3 := strconv.ParseInt(tot, 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || start < 0 || end < start || total <= end {
		return 0, 0, 0, fmt.Errorf("Content-Range %q", s)
	}
	return start, end, total, nil
}

// bareErr drops the *url.Error around a transport error: it repeats the
// URL with its query, which may hold a token.
func bareErr(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// redact drops user info and query from a URL for logs and errors.
func redact(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	u.User = nil
	if u.RawQuery != "" {
		u.RawQuery = "…"
	}
	u.Fragment = ""
	return u.String()
}
