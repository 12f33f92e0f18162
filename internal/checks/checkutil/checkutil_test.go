package checkutil

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/url"
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

func TestRequestErrorDropsTheURL(t *testing.T) {
	err := &url.Error{Op: "Get", URL: "http://user:pw-secret@example.org/?token=qs-secret", Err: errors.New("connection refused")}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
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
