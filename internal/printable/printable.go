// Package printable escapes text that came from outside offpeak — lock
// records other hosts wrote, a server's answers — before it reaches a
// terminal or a log line, so that control characters can neither forge
// lines nor drive the terminal.
package printable

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Is reports whether s is valid UTF-8 of printable characters and spaces.
func Is(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r != ' ' && !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// String returns s with every unprintable character written as a Go escape
// (\n, \x1b, \u009b) and every invalid byte as \xNN; printable text,
// spaces included, is unchanged.
func String(s string) string {
	if Is(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b.WriteString(`\x`)
			b.WriteString(strconv.FormatUint(uint64(s[i])|0x100, 16)[1:])
		case r == ' ' || unicode.IsPrint(r):
			b.WriteRune(r)
		default:
			q := strconv.QuoteRuneToASCII(r)
			b.WriteString(q[1 : len(q)-1])
		}
		i += size
	}
	return b.String()
}
