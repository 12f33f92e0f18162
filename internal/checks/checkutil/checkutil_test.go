package checkutil

import (
	"context"
	"errors"
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
	started := time.Now()
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
