package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var fixedNow = time.Date(2026, 3, 29, 2, 30, 0, 0, time.UTC)

// recorder is a webhook receiver that answers with a scripted status list
// (the last one repeats) and keeps what it received.
type recorder struct {
	mu       sync.Mutex
	statuses []int
	reqs     []received
}

type received struct {
	method, ua, ctype, auth string
	body                    []byte
}

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	r.reqs = append(r.reqs, received{req.Method, req.UserAgent(), req.Header.Get("Content-Type"), req.Header.Get("Authorization"), body})
	status := r.statuses[min(len(r.reqs), len(r.statuses))-1]
	r.mu.Unlock()
	w.WriteHeader(status)
}

func (r *recorder) received() []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]received(nil), r.reqs...)
}

// newWebhook builds a webhook whose sleeps are recorded, not slept.
func newWebhook(cfg Config, log *slog.Logger) (*Webhook, *[]time.Duration) {
	w := New(cfg, log)
	var slept []time.Duration
	w.Sleep = func(ctx context.Context, d time.Duration) error {
		slept = append(slept, d)
		return ctx.Err()
	}
	w.Now = func() time.Time { return fixedNow }
	return w, &slept
}

func TestDelivery(t *testing.T) {
	rec := &recorder{statuses: []int{204}}
	srv := httptest.NewServer(rec)
	t.Cleanup(srv.Close)
	w, slept := newWebhook(Config{URL: srv.URL + "/hook", Headers: map[string]string{"Authorization": "Bearer hook-secret"}}, nil)

	ev := Event{Kind: PostBootFailed, Node: "node-1", Group: "web", Reason: "api check failed", Details: map[string]string{"check": "api"}}
	if err := w.Notify(t.Context(), ev); err != nil {
		t.Fatal(err)
	}
	got := rec.received()
	if len(got) != 1 || len(*slept) != 0 {
		t.Fatalf("%d requests, %d sleeps; want 1 and 0", len(got), len(*slept))
	}
	r := got[0]
	if r.method != http.MethodPost || r.ua != "offpeak" || r.ctype != "application/json" || r.auth != "Bearer hook-secret" {
		t.Fatalf("request = %+v", r)
	}
	var body map[string]any
	if err := json.Unmarshal(r.body, &body); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"event": "post-boot-failed", "node": "node-1", "group": "web",
		"time": "2026-03-29T02:30:00Z", "reason": "api check failed",
		"details": map[string]any{"check": "api"},
	}
	if !jsonEqual(body, want) {
		t.Fatalf("body = %s", r.body)
	}
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

func TestEventTimeIsRFC3339UTC(t *testing.T) {
	berlin := time.FixedZone("CEST", 2*3600)
	b, err := json.Marshal(Event{Kind: Rebooted, Node: "n", Group: "g", Time: time.Date(2026, 3, 29, 4, 30, 0, 999, berlin)})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"event":"rebooted","node":"n","group":"g","time":"2026-03-29T02:30:00Z"}`; string(b) != want {
		t.Fatalf("got %s, want %s", b, want)
	}
}

func TestRetries(t *testing.T) {
	tests := []struct {
		name      string
		statuses  []int
		wantErr   error
		wantReqs  int
		wantSleep []time.Duration
	}{
		{"accepted first time", []int{200}, nil, 1, nil},
		{"5xx then success", []int{503, 502, 200}, nil, 3, []time.Duration{500 * time.Millisecond, time.Second}},
		{"429 is retried", []int{429, 202}, nil, 2, []time.Duration{500 * time.Millisecond}},
		{"always 5xx gives up", []int{500}, ErrUndelivered, 4, []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second}},
		{"4xx is final", []int{400}, ErrRejected, 1, nil},
		{"404 after 5xx is final", []int{503, 404}, ErrRejected, 2, []time.Duration{500 * time.Millisecond}},
		{"redirect is not followed", []int{302}, ErrRejected, 1, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{statuses: tt.statuses}
			srv := httptest.NewServer(rec)
			t.Cleanup(srv.Close)
			w, slept := newWebhook(Config{URL: srv.URL}, nil)
			err := w.Notify(t.Context(), Event{Kind: Rebooted, Node: "n", Group: "g"})
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if n := len(rec.received()); n != tt.wantReqs {
				t.Fatalf("%d requests, want %d", n, tt.wantReqs)
			}
			if !jsonEqual(*slept, tt.wantSleep) {
				t.Fatalf("slept %v, want %v", *slept, tt.wantSleep)
			}
		})
	}
}

func TestConnectionErrorIsRetried(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	w, slept := newWebhook(Config{URL: url}, nil)
	w.Attempts = 3
	err := w.Notify(t.Context(), Event{Kind: GroupFrozen})
	if !errors.Is(err, ErrUndelivered) || len(*slept) != 2 {
		t.Fatalf("err = %v after %d sleeps", err, len(*slept))
	}
}

func TestAttemptTimeout(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The server notices the client leaving only once the body is read.
		_, _ = io.Copy(io.Discard, r.Body)
		<-r.Context().Done()
	}))
	t.Cleanup(srv.Close)
	w, _ := newWebhook(Config{URL: srv.URL, Timeout: 100 * time.Millisecond}, nil)
	w.Attempts = 2
	err := w.Notify(t.Context(), Event{Kind: RebootPlanned})
	if !errors.Is(err, ErrUndelivered) || !strings.Contains(err.Error(), "timed out after") {
		t.Fatalf("err = %v", err)
	}
}

func TestCallerContextEndsTheBackoff(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cancel() // the caller gives up while the first attempt is answered
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	t.Cleanup(srv.Close)
	w := New(Config{URL: srv.URL}, nil)
	w.Backoff = time.Hour // real sleep: it must be cut short by ctx
	err := w.Notify(ctx, Event{Kind: Rebooted})
	if !errors.Is(err, context.Canceled) || !errors.Is(err, ErrUndelivered) {
		t.Fatalf("err = %v, want undelivered and canceled", err)
	}
}

func TestTLSWithCAFile(t *testing.T) {
	rec := &recorder{statuses: []int{200}}
	srv := httptest.NewTLSServer(rec)
	t.Cleanup(srv.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Run("CA file is trusted", func(t *testing.T) {
		w, _ := newWebhook(Config{URL: srv.URL, CAFile: ca}, nil)
		if err := w.Notify(t.Context(), Event{Kind: Rebooted}); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("without it the receiver is untrusted", func(t *testing.T) {
		w, _ := newWebhook(Config{URL: srv.URL}, nil)
		w.Attempts = 1
		if err := w.Notify(t.Context(), Event{Kind: Rebooted}); !errors.Is(err, ErrUndelivered) || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestSecretsStayOutOfLogsAndErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) }))
	t.Cleanup(srv.Close)
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	url := strings.Replace(srv.URL, "http://", "http://bot:pw-in-url@", 1) + "/hook?token=qs-secret"
	w, _ := newWebhook(Config{URL: url, Headers: map[string]string{"Authorization": "Bearer header-secret"}}, log)
	err := w.Notify(t.Context(), Event{Kind: GroupFrozen})
	if !errors.Is(err, ErrUndelivered) {
		t.Fatalf("err = %v", err)
	}
	all := logs.String() + err.Error()
	for _, s := range []string{"pw-in-url", "qs-secret", "header-secret"} {
		if strings.Contains(all, s) {
			t.Fatalf("%q leaked: %s", s, all)
		}
	}
}

func TestDisabledAndMisconfigured(t *testing.T) {
	var nilHook *Webhook
	if err := nilHook.Notify(t.Context(), Event{Kind: Rebooted}); err != nil {
		t.Fatalf("nil webhook: %v", err)
	}
	if err := New(Config{}, nil).Notify(t.Context(), Event{Kind: Rebooted}); err != nil {
		t.Fatalf("empty URL: %v", err)
	}
	for _, cfg := range []Config{
		{URL: "ftp://example.org/hook"},
		{URL: "http://127.0.0.1/hook", CAFile: "/nonexistent/ca.pem"},
		{URL: "http://127.0.0.1/hook", Headers: map[string]string{"X-A": "a\r\nX-B: b"}},
		{URL: "http://127.0.0.1/hook", Headers: map[string]string{"X A": "b"}},
		{URL: "http://127.0.0.1/hook", Headers: map[string]string{"X(A)": "b"}},
	} {
		if err := New(cfg, nil).Notify(t.Context(), Event{Kind: Rebooted}); !errors.Is(err, ErrConfig) {
			t.Fatalf("%+v: err = %v, want ErrConfig", cfg, err)
		}
	}
}

// A receiver that hangs cannot hold Notify longer than Total, whatever the
// attempts and per-attempt timeout allow.
func TestTotalBoundsAllAttempts(t *testing.T) {
	var mu sync.Mutex
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n++
		mu.Unlock()
		_, _ = io.Copy(io.Discard, r.Body)
		<-r.Context().Done()
	}))
	t.Cleanup(srv.Close)
	w := New(Config{URL: srv.URL, Timeout: 50 * time.Millisecond}, nil)
	w.Attempts = 1000
	w.Backoff = time.Millisecond
	w.Total = 300 * time.Millisecond
	err := w.Notify(t.Context(), Event{Kind: RebootPlanned})
	if !errors.Is(err, ErrUndelivered) || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "gave up after 300ms in all") {
		t.Fatalf("err = %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	// Each attempt lasts its 50ms timeout, so 300ms in all leaves room for
	// a handful, far from the 1000 allowed.
	if n == 0 || n >= w.Attempts {
		t.Fatalf("%d attempts", n)
	}
}
