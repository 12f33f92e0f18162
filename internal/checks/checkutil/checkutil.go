// Package checkutil holds the pieces the built-in health checks share: the
// logger and clock every check carries, result building, text truncation
// and D-Bus connections. What outgoing HTTP calls share, the webhook's too,
// is in internal/httpx.
package checkutil

import (
	"strings"
	"unicode/utf8"
)

// Truncate shortens s to at most n bytes without splitting a UTF-8
// sequence, marking the cut with "…". Invalid UTF-8 is replaced first, so
// the result is always valid text for logs and JSON.
func Truncate(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	const mark = "…"
	if n <= len(mark) {
		return ""
	}
	cut := n - len(mark)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + mark
}

// TruncateHead keeps the last n bytes of s (the end of a command's output
// is usually what explains a failure), marking the cut with "…".
func TruncateHead(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	const mark = "…"
	if n <= len(mark) {
		return ""
	}
	start := len(s) - (n - len(mark))
	for start < len(s) && !utf8.RuneStart(s[start]) {
		start++
	}
	return mark + s[start:]
}
