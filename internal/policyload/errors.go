package policyload

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/offpeak/offpeak/internal/safepath"
)

// ErrInvalid is wrapped by every policy error, so callers can tell a bad
// policy from an unreadable file.
var ErrInvalid = errors.New("invalid policy")

// ErrUnsafe: a policy file or drop-in directory could be changed by someone
// other than root (or the user running offpeak). It is safepath.ErrUnsafe.
var ErrUnsafe = safepath.ErrUnsafe

// FieldError is one problem with one key.
type FieldError struct {
	File string
	Line int
	Key  string
	Msg  string
}

func (e FieldError) Error() string {
	file := e.File
	if file == "" {
		file = "built-in default"
	}
	key := e.Key
	if key == "" {
		key = "(file)"
	}
	return fmt.Sprintf("%s:%d: %s: %s", file, e.Line, key, e.Msg)
}

// Errors is every problem found, sorted by file and line.
type Errors []FieldError

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

func (es Errors) Unwrap() error { return ErrInvalid }

func (es Errors) sorted() Errors {
	sort.SliceStable(es, func(i, j int) bool {
		if es[i].File != es[j].File {
			return es[i].File < es[j].File
		}
		return es[i].Line < es[j].Line
	})
	return es
}

// collector gathers errors for one file.
type collector struct {
	file  string
	lines lineIndex
	errs  Errors
}

func (c *collector) addf(path, format string, args ...any) {
	// One message per key: a value that failed to decode is not reported
	// again by the checks that read it.
	for _, e := range c.errs {
		if e.Key == path {
			return
		}
	}
	c.errs = append(c.errs, FieldError{File: c.file, Line: c.lines.lookup(path), Key: path, Msg: fmt.Sprintf(format, args...)})
}

// suggest returns the candidate nearest to key, or "" when none is close.
func suggest(key string, candidates []string) string {
	best, bestD := "", 1<<30
	for _, c := range candidates {
		d := levenshtein(strings.ToLower(key), strings.ToLower(c))
		if d < bestD {
			best, bestD = c, d
		}
	}
	limit := max(2, len(key)/3)
	if bestD <= limit {
		return best
	}
	return ""
}

func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
