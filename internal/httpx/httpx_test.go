package httpx

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/offpeak/offpeak/internal/tlsutil"
	"github.com/offpeak/offpeak/plugins"
)

func TestSafeURLDropsSecrets(t *testing.T) {
	u, err := url.Parse("https://user:pw@example.org:8443/a%2Fb/c?token=x#frag")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := SafeURL(u), "https://example.org:8443/a%2Fb/c"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestParseURLDoesNotEchoPassword(t *testing.T) {
	_, err := ParseURL("http://user:pw-secret@exa mple.org/")
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
}

func TestNewRequest(t *testing.T) {
	u, err := ParseURL("https://user:pw-secret@example.org:8443/api?token=qs-secret")
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewRequest(t.Context(), http.MethodGet, u, tlsutil.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Target != "GET https://example.org:8443/api" || r.Req.Header.Get("User-Agent") != "offpeak" || r.Req.URL.String() != u.String() {
		t.Fatalf("request %+v, target %q", r.Req, r.Target)
	}
	if _, err := NewRequest(t.Context(), "BAD METHOD", u, tlsutil.Options{}); !errors.Is(err, plugins.ErrInvalidArgument) || strings.Contains(err.Error(), "secret") {
		t.Fatalf("bad method: %v", err)
	}
	if _, err := NewRequest(t.Context(), http.MethodGet, u, tlsutil.Options{CAFile: filepath.Join(t.TempDir(), "absent")}); !errors.Is(err, plugins.ErrInvalidArgument) {
		t.Fatalf("missing CA: %v", err)
	}
}
