package fetch_test

import (
	"bytes"
	"context"
	"crypto/sha1" //nolint:gosec // the download's optional extra check
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/offpeak/offpeak/internal/update/fetch"
)

// server serves one payload with http.ServeContent (Range, If-Range) and
// can cut connections, ignore ranges, change the payload or fail.
type server struct {
	mu sync.Mutex

	content     []byte
	etag        string
	lastMod     time.Time
	cuts        []int64 // request i is cut after cuts[i] body bytes; -1 or missing: not cut
	statuses    []int   // request i answers statuses[i] when non-zero
	ignoreRange bool
	// change, when set, replaces the content after the first request.
	change func(s *server)

	reqs []http.Header
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	i := len(s.reqs)
	s.reqs = append(s.reqs, r.Header.Clone())
	if i == 1 && s.change != nil {
		s.change(s)
	}
	content, etag, lastMod := s.content, s.etag, s.lastMod
	cut := int64(-1)
	if i < len(s.cuts) {
		cut = s.cuts[i]
	}
	status := 0
	if i < len(s.statuses) {
		status = s.statuses[i]
	}
	ignore := s.ignoreRange
	s.mu.Unlock()

	if status != 0 {
		http.Error(w, http.StatusText(status), status)
		return
	}
	if ignore {
		r.Header.Del("Range")
	}
	if etag != "" {
		w.Header().Set("ETag", etag)
	}
	if cut >= 0 {
		w = &cutWriter{ResponseWriter: w, left: cut}
	}
	http.ServeContent(w, r, "payload", lastMod, bytes.NewReader(content))
}

func (s *server) headers() []http.Header {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]http.Header(nil), s.reqs...)
}

// cutWriter sends left bytes of the body, then drops the connection.
type cutWriter struct {
	http.ResponseWriter
	left int64
}

func (c *cutWriter) Write(p []byte) (int, error) {
	if int64(len(p)) <= c.left {
		c.left -= int64(len(p))
		return c.ResponseWriter.Write(p)
	}
	c.ResponseWriter.Write(p[:c.left])
	c.left = 0
	c.ResponseWriter.(http.Flusher).Flush()
	panic(http.ErrAbortHandler)
}

func content(n int, seed uint64) []byte {
	r := mrand.New(mrand.NewPCG(seed, 7))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func target(url string, b []byte) fetch.Target {
	sum := sha256.Sum256(b)
	s1 := sha1.Sum(b) //nolint:gosec // see import
	return fetch.Target{URL: url, Size: int64(len(b)), SHA256: sum[:], SHA1: s1[:]}
}

func newFetcher(hc *http.Client) *fetch.Fetcher {
	return &fetch.Fetcher{HTTP: hc, Backoff: func(int) time.Duration { return 0 }}
}

func start(t *testing.T, s *server) *httptest.Server {
	t.Helper()
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return ts
}

// download reads a whole download through small, odd-sized reads, the way
// an installer with its own buffers does.
func download(ctx context.Context, f *fetch.Fetcher, tg fetch.Target) ([]byte, *fetch.Download, error) {
	d, err := f.Open(ctx, tg)
	if err != nil {
		return nil, nil, err
	}
	defer d.Close()
	var out bytes.Buffer
	buf := make([]byte, 12345)
	for {
		n, err := d.Read(buf)
		out.Write(buf[:n])
		if err == io.EOF {
			return out.Bytes(), d, nil
		}
		if err != nil {
			return out.Bytes(), d, err
		}
	}
}

func TestTruncatedDownloadResumedByRange(t *testing.T) {
	lastMod := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name    string
		etag    string
		lastMod time.Time
		ifRange string
	}{
		{"ETag", `"v1-abc"`, time.Time{}, `"v1-abc"`},
		{"Last-Modified", "", lastMod, lastMod.Format(http.TimeFormat)},
		{"no validator", "", time.Time{}, ""},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			body := content(1<<20+333, uint64(i))
			s := &server{content: body, etag: c.etag, lastMod: c.lastMod, cuts: []int64{100_000, 350_001, 0, 1}}
			ts := start(t, s)
			got, d, err := download(t.Context(), newFetcher(ts.Client()), target(ts.URL+"/p", body))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, body) {
				t.Fatalf("got %d bytes, not byte-identical to the %d served", len(got), len(body))
			}
			hs := s.headers()
			if len(hs) != 5 || d.Resumes() != 4 {
				t.Fatalf("%d requests, %d resumes; want 5 and 4", len(hs), d.Resumes())
			}
			want := []int64{0, 100_000, 450_001, 450_001, 450_002}
			for j, h := range hs {
				rng, ir := h.Get("Range"), h.Get("If-Range")
				if j == 0 {
					if rng != "" || ir != "" {
						t.Fatalf("first request has Range %q If-Range %q", rng, ir)
					}
					continue
				}
				if rng != "bytes="+strconv.FormatInt(want[j], 10)+"-" || ir != c.ifRange {
					t.Fatalf("request %d: Range %q If-Range %q; want from %d with If-Range %q", j, rng, ir, want[j], c.ifRange)
				}
			}
		})
	}
}

func TestRestartFromZeroWhenRangeIgnored(t *testing.T) {
	body := content(600_000, 3)
	s := &server{content: body, etag: `"x"`, cuts: []int64{200_000}, ignoreRange: true}
	ts := start(t, s)
	var prog []fetch.Progress
	f := newFetcher(ts.Client())
	f.Progress = func(p fetch.Progress) { prog = append(prog, p) }
	got, _, err := download(t.Context(), f, target(ts.URL, body))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, body) {
		t.Fatal("not byte-identical after a restart from 0")
	}
	// The replayed bytes are not handed out (or counted) twice.
	for i := 1; i < len(prog); i++ {
		if prog[i].Done < prog[i-1].Done {
			t.Fatalf("progress went back from %d to %d", prog[i-1].Done, prog[i].Done)
		}
	}
	if last := prog[len(prog)-1]; last.Done != int64(len(body)) || last.Total != int64(len(body)) || last.Resumes != 1 {
		t.Fatalf("last progress %+v", last)
	}
}

func TestChangedPayloadRefused(t *testing.T) {
	body := content(500_000, 4)
	other := content(500_000, 5)
	cases := []struct {
		name string
		s    *server
		want error
	}{
		{"new ETag: If-Range sends it all again", &server{etag: `"1"`, change: func(s *server) { s.content, s.etag = other, `"2"` }}, fetch.ErrChanged},
		{"ranges ignored, other bytes", &server{ignoreRange: true, change: func(s *server) { s.content = other }}, fetch.ErrChanged},
		{"ranges honoured, no validator: the hash catches it", &server{change: func(s *server) { s.content = other }}, fetch.ErrHashMismatch},
		{"another size", &server{change: func(s *server) { s.content = other[:400_000] }}, fetch.ErrChanged},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.s.content = body
			c.s.cuts = []int64{123_456}
			ts := start(t, c.s)
			got, _, err := download(t.Context(), newFetcher(ts.Client()), target(ts.URL, body))
			if !errors.Is(err, c.want) {
				t.Fatalf("got %d bytes, %v; want %v", len(got), err, c.want)
			}
		})
	}
}

func TestWrongHashFailsTheLastRead(t *testing.T) {
	body := content(300_000, 6)
	ts := start(t, &server{content: body})
	for _, c := range []struct {
		name  string
		twist func(*fetch.Target)
	}{
		{"sha256", func(tg *fetch.Target) { tg.SHA256[5] ^= 1 }},
		{"sha1", func(tg *fetch.Target) { tg.SHA1[0] ^= 1 }},
	} {
		t.Run(c.name, func(t *testing.T) {
			tg := target(ts.URL, body)
			c.twist(&tg)
			got, _, err := download(t.Context(), newFetcher(ts.Client()), tg)
			if !errors.Is(err, fetch.ErrHashMismatch) {
				t.Fatalf("%v, want ErrHashMismatch", err)
			}
			// Every byte was handed out, and the verdict came in place
			// of io.EOF.
			if !bytes.Equal(got, body) {
				t.Fatalf("got %d bytes before the error, want all %d", len(got), len(body))
			}
		})
	}
}

func TestSizeMismatch(t *testing.T) {
	body := content(100_000, 7)
	t.Run("announced", func(t *testing.T) {
		ts := start(t, &server{content: body})
		tg := target(ts.URL, body)
		tg.Size--
		if _, err := newFetcher(ts.Client()).Open(t.Context(), tg); !errors.Is(err, fetch.ErrSizeMismatch) {
			t.Fatalf("%v, want ErrSizeMismatch", err)
		}
	})
	t.Run("sent without a length", func(t *testing.T) {
		ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Write(body) // more than one write: chunked, no Content-Length
			w.(http.Flusher).Flush()
			w.Write([]byte("extra"))
		}))
		defer ts.Close()
		got, _, err := download(t.Context(), newFetcher(ts.Client()), target(ts.URL, body))
		if !errors.Is(err, fetch.ErrSizeMismatch) {
			t.Fatalf("%v, want ErrSizeMismatch", err)
		}
		if len(got) > len(body) {
			t.Fatalf("handed out %d bytes of a %d-byte payload", len(got), len(body))
		}
	})
	t.Run("inconsistent Content-Range", func(t *testing.T) {
		n := 0
		ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n++
			if n == 1 {
				w.Header().Set("Content-Length", strconv.Itoa(len(body)))
				w.Write(body[:1000])
				w.(http.Flusher).Flush()
				panic(http.ErrAbortHandler)
			}
			w.Header().Set("Content-Range", fmt.Sprintf("bytes 0-%d/%d", len(body)-1, len(body)))
			w.WriteHeader(http.StatusPartialContent)
			w.Write(body)
		}))
		defer ts.Close()
		_, _, err := download(t.Context(), newFetcher(ts.Client()), target(ts.URL, body))
		if !errors.Is(err, fetch.ErrChanged) {
			t.Fatalf("%v, want ErrChanged", err)
		}
	})
}

func TestHTTPStatusesAndRetries(t *testing.T) {
	body := content(50_000, 8)
	cases := []struct {
		name     string
		s        *server
		retries  int
		want     error
		requests int
	}{
		{"404 is final", &server{statuses: []int{404}}, 3, fetch.ErrHTTPStatus, 1},
		{"503 twice, then served", &server{statuses: []int{503, 503}}, 3, nil, 3},
		{"503 forever", &server{statuses: []int{503, 503, 503, 503, 503, 503}}, 3, fetch.ErrInterrupted, 4},
		{"dropped without progress", &server{cuts: []int64{1000, 0, 0, 0, 0}}, 2, fetch.ErrInterrupted, 3},
		{"dropped with progress each time", &server{cuts: []int64{10_000, 10_000, 10_000, 10_000, 10_000}}, 1, nil, 5},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.s.content = body
			ts := start(t, c.s)
			var waits []int
			f := &fetch.Fetcher{HTTP: ts.Client(), MaxRetries: c.retries, Backoff: func(n int) time.Duration {
				waits = append(waits, n)
				return 0
			}}
			got, _, err := download(t.Context(), f, target(ts.URL, body))
			if !errors.Is(err, c.want) && (c.want != nil || err != nil) {
				t.Fatalf("%v, want %v", err, c.want)
			}
			if c.want == nil && !bytes.Equal(got, body) {
				t.Fatal("not byte-identical")
			}
			if n := len(c.s.headers()); n != c.requests {
				t.Fatalf("%d requests, want %d (backoffs %v)", n, c.requests, waits)
			}
		})
	}
}

// A stalled transfer ends when the context is cancelled or the download
// closed, even with a Read blocked in another goroutine.
func TestCancelAndClose(t *testing.T) {
	body := content(200_000, 9)
	release := make(chan struct{})
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body[:50_000])
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer ts.Close()
	defer close(release)

	for _, how := range []string{"cancel", "close"} {
		t.Run(how, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			d, err := newFetcher(ts.Client()).Open(ctx, target(ts.URL, body))
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			buf := make([]byte, 50_000)
			if _, err := io.ReadFull(d, buf); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() {
				_, err := d.Read(buf)
				done <- err
			}()
			if how == "cancel" {
				cancel()
			} else {
				d.Close()
			}
			err = <-done
			switch how {
			case "cancel":
				if !errors.Is(err, context.Canceled) {
					t.Fatalf("%v, want context.Canceled", err)
				}
			case "close":
				if !errors.Is(err, fetch.ErrClosed) {
					t.Fatalf("%v, want ErrClosed", err)
				}
			}
			if _, err := d.Read(buf); err == nil {
				t.Fatal("a Read after the end succeeded")
			}
		})
	}
}

type countingLimiter struct {
	burst, calls int
	total, max   int
}

func (l *countingLimiter) WaitN(ctx context.Context, n int) error {
	l.calls++
	l.total += n
	l.max = max(l.max, n)
	return ctx.Err()
}
func (l *countingLimiter) Burst() int { return l.burst }

func TestLimiterPacesEveryByte(t *testing.T) {
	body := content(300_000, 10)
	ts := start(t, &server{content: body, cuts: []int64{77_777}})
	lim := &countingLimiter{burst: 16 << 10}
	f := newFetcher(ts.Client())
	f.Limiter = lim
	got, _, err := download(t.Context(), f, target(ts.URL, body))
	if err != nil || !bytes.Equal(got, body) {
		t.Fatalf("%v (%d bytes)", err, len(got))
	}
	if lim.total != len(body) || lim.max > lim.burst {
		t.Fatalf("limiter waited for %d bytes in reads of at most %d; want %d in reads of at most %d", lim.total, lim.max, len(body), lim.burst)
	}
	if l := fetch.NewLimiter(10 << 20); l.Burst() != 1<<20 {
		t.Fatalf("burst %d at 10 MiB/s", l.Burst())
	}
	if l := fetch.NewLimiter(1000); l.Burst() != 4<<10 {
		t.Fatalf("burst %d at 1000 B/s", l.Burst())
	}
}

func TestInvalidTarget(t *testing.T) {
	good := target("https://example.invalid/p", []byte("x"))
	cases := map[string]func(*fetch.Target){
		"no sha256":  func(tg *fetch.Target) { tg.SHA256 = nil },
		"short sha1": func(tg *fetch.Target) { tg.SHA1 = tg.SHA1[:10] },
		"size 0":     func(tg *fetch.Target) { tg.Size = 0 },
		"ftp":        func(tg *fetch.Target) { tg.URL = "ftp://example.invalid/p" },
		"relative":   func(tg *fetch.Target) { tg.URL = "/p" },
	}
	for name, twist := range cases {
		t.Run(name, func(t *testing.T) {
			tg := good
			tg.SHA256, tg.SHA1 = bytes.Clone(good.SHA256), bytes.Clone(good.SHA1)
			twist(&tg)
			if _, err := newFetcher(http.DefaultClient).Open(t.Context(), tg); !errors.Is(err, fetch.ErrInvalidTarget) {
				t.Fatalf("%v, want ErrInvalidTarget", err)
			}
		})
	}
}

// Credentials in a URL stay out of errors.
func TestErrorsHideURLSecrets(t *testing.T) {
	ts := start(t, &server{statuses: []int{403}})
	tg := target(ts.URL, []byte("x"))
	tg.URL = "http://user:hunter2@" + ts.Listener.Addr().String() + "/p?token=s3cret"
	_, err := newFetcher(ts.Client()).Open(t.Context(), tg)
	if err == nil {
		t.Fatal("403 accepted")
	}
	for _, secret := range []string{"hunter2", "s3cret"} {
		if bytes.Contains([]byte(err.Error()), []byte(secret)) {
			t.Fatalf("error %q shows %q", err, secret)
		}
	}
	// A transport error too (nothing listens there any more).
	addr := ts.Listener.Addr().String()
	ts.Close()
	tg.URL = "http://user:hunter2@" + addr + "/p?token=s3cret"
	f := newFetcher(ts.Client())
	f.MaxRetries = 1
	_, err = f.Open(t.Context(), tg)
	if !errors.Is(err, fetch.ErrInterrupted) {
		t.Fatalf("%v, want ErrInterrupted", err)
	}
	for _, secret := range []string{"hunter2", "s3cret"} {
		if bytes.Contains([]byte(err.Error()), []byte(secret)) {
			t.Fatalf("error %q shows %q", err, secret)
		}
	}
}
