package checkutil

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/offpeak/offpeak/plugins"
)

func TestTruncate(t *testing.T) {
	tests := []struct {
		name, in string
		n        int
		head     string // Truncate
		tail     string // TruncateHead
	}{
		{"short stays", "abc", 10, "abc", "abc"},
		{"exact stays", "abcdef", 6, "abcdef", "abcdef"},
		{"cut with mark", "abcdefghij", 7, "abcd…", "…ghij"},
		{"no rune is split", "ääääää", 8, "ää…", "…ää"},
		{"invalid utf-8 replaced", "a\xffb", 10, "a\uFFFDb", "a\uFFFDb"},
		{"tiny limit", "abcdef", 2, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Truncate(tt.in, tt.n); got != tt.head || len(got) > max(tt.n, len(tt.in)) || !utf8.ValidString(got) {
				t.Errorf("Truncate = %q, want %q", got, tt.head)
			}
			if got := TruncateHead(tt.in, tt.n); got != tt.tail || !utf8.ValidString(got) {
				t.Errorf("TruncateHead = %q, want %q", got, tt.tail)
			}
		})
	}
}

func TestSafeURLDropsSecrets(t *testing.T) {
	u, err := url.Parse("https://user:pw@example.org:8443/a%2Fb/c?token=x#frag")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := SafeURL(u), "https://example.org:8443/a%2Fb/c"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestParseHTTPURLDoesNotEchoPassword(t *testing.T) {
	_, err := ParseHTTPURL("http://user:pw-secret@exa mple.org/")
	if !errors.Is(err, plugins.ErrInvalidArgument) || strings.Contains(err.Error(), "pw-secret") {
		t.Fatalf("err = %v", err)
	}
}

func TestCtxReason(t *testing.T) {
	// Started 1.5s ago, so the deadline below is already due.
	started := time.Now().Add(-1500 * time.Millisecond)
	live := t.Context()
	if r := CtxReason(live, started); r != "" {
		t.Fatalf("live ctx: %q", r)
	}
	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	if r := CtxReason(canceled, started); r != "canceled" {
		t.Fatalf("canceled ctx: %q", r)
	}
	expired, cancel2 := context.WithDeadline(t.Context(), started.Add(1500*time.Millisecond))
	defer cancel2()
	<-expired.Done()
	if r := CtxReason(expired, started); r != "timed out after 1.5s" {
		t.Fatalf("expired ctx: %q", r)
	}
}

func TestTLSConfig(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.pem")
	if err := os.WriteFile(junk, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		o    TLSOptions
		ok   bool
	}{
		{"defaults", TLSOptions{}, true},
		{"missing CA", TLSOptions{CAFile: filepath.Join(dir, "absent")}, false},
		{"CA without PEM", TLSOptions{CAFile: junk}, false},
		{"cert without key", TLSOptions{CertFile: junk}, false},
		{"unreadable pair", TLSOptions{CertFile: junk, KeyFile: junk}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := TLSConfig(tt.o)
			if tt.ok != (err == nil) || (err != nil && !errors.Is(err, plugins.ErrInvalidArgument)) {
				t.Fatalf("err = %v", err)
			}
			if tt.ok && (cfg.RootCAs != nil || cfg.InsecureSkipVerify) {
				t.Fatalf("defaults changed trust: %+v", cfg)
			}
		})
	}
}

func TestValidHeader(t *testing.T) {
	for _, tt := range []struct {
		k, v string
		want bool
	}{
		{"Authorization", "Bearer x", true},
		{"X-Custom_1", "", true},
		{"", "v", false},
		{"X A", "v", false},
		{"X:A", "v", false},
		{"Ä", "v", false},
		{"X-A", "a\r\nX-B: b", false},
		{"X-A", "a\x00", false},
	} {
		if got := ValidHeader(tt.k, tt.v); got != tt.want {
			t.Errorf("ValidHeader(%q, %q) = %v, want %v", tt.k, tt.v, got, tt.want)
		}
	}
}

func TestTransportErrorDropsTheURL(t *testing.T) {
	err := &url.Error{Op: "Get", URL: "http://user:pw-secret@example.org/?token=qs-secret", Err: errors.New("connection refused")}
	if got := TransportError(t.Context(), time.Now(), err); got != "connection refused" {
		t.Fatalf("got %q", got)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if got := TransportError(ctx, time.Now(), err); got != "canceled" {
		t.Fatalf("ended ctx: got %q", got)
	}
	b := NewBase(nil)
	res := b.RequestError(t.Context(), time.Now(), "GET http://example.org/", err, nil)
	if res.Outcome != plugins.Error || res.Reason != "GET http://example.org/: connection refused" || res.Details != nil {
		t.Fatalf("RequestError = %+v", res)
	}
	res = b.RequestError(ctx, time.Now(), "GET http://example.org/", err, map[string]string{"target": "x"})
	if res.Outcome != plugins.Error || res.Reason != "canceled: GET http://example.org/" || res.Details["target"] != "x" {
		t.Fatalf("RequestError after cancel = %+v", res)
	}
}

func TestNewRequest(t *testing.T) {
	u, err := ParseHTTPURL("https://user:pw-secret@example.org:8443/api?token=qs-secret")
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewRequest(t.Context(), http.MethodGet, u, TLSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Target != "GET https://example.org:8443/api" || r.Req.Header.Get("User-Agent") != "offpeak" || r.Req.URL.String() != u.String() {
		t.Fatalf("request %+v, target %q", r.Req, r.Target)
	}
	if _, err := NewRequest(t.Context(), "BAD METHOD", u, TLSOptions{}); !errors.Is(err, plugins.ErrInvalidArgument) || strings.Contains(err.Error(), "secret") {
		t.Fatalf("bad method: %v", err)
	}
	if _, err := NewRequest(t.Context(), http.MethodGet, u, TLSOptions{CAFile: filepath.Join(t.TempDir(), "absent")}); !errors.Is(err, plugins.ErrInvalidArgument) {
		t.Fatalf("missing CA: %v", err)
	}
}

func TestBase(t *testing.T) {
	var logs bytes.Buffer
	b := NewBase(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	at := time.Date(2026, 3, 29, 2, 30, 0, 0, time.UTC)
	b.Now = func() time.Time { return at }
	res := b.Result(plugins.Pass, "ok", map[string]string{})
	if res.Details != nil || !res.Time.Equal(at) || res.Outcome != plugins.Pass || res.Reason != "ok" {
		t.Fatalf("Result = %+v", res)
	}
	if got := b.Done(t.Context(), "demo", "probe", time.Now(), res, slog.String("target", "x")); got.Reason != res.Reason {
		t.Fatalf("Done changed the result: %+v", got)
	}
	if out := logs.String(); !strings.Contains(out, `msg="demo check done" check=probe target=x outcome=pass took=`) {
		t.Fatalf("log: %q", out)
	}
	// Without a logger nothing is logged and nothing breaks.
	quiet := NewBase(nil)
	quiet.Done(t.Context(), "demo", "probe", time.Now(), res)
}
