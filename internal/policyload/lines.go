package policyload

import (
	"strconv"
	"strings"
)

// lineIndex maps key paths ("window[1].start", "lock.config.endpoints") to
// the line that defines them. BurntSushi/toml reports positions only for
// syntax errors, so errors about values find their line here.
type lineIndex map[string]int

// lookup returns the line of path, or of its nearest defined parent.
func (li lineIndex) lookup(path string) int {
	for p := path; p != ""; p = parentPath(p) {
		if n, ok := li[p]; ok {
			return n
		}
	}
	return 0
}

func parentPath(p string) string {
	i := strings.LastIndexAny(p, ".[")
	if i <= 0 {
		return ""
	}
	return p[:i]
}

// indexLines scans TOML source for table headers and keys. It tracks
// multi-line strings and bracket depth so continuation lines are not taken
// for keys; keys inside inline tables resolve to their parent's line.
func indexLines(src string) lineIndex {
	li := lineIndex{}
	arrays := map[string]int{} // plain header path -> index of its latest element
	prefix := ""
	depth := 0    // open [ or { of a value spanning lines
	inMulti := "" // closing delimiter of an open multi-line string
	for n, line := range strings.Split(src, "\n") {
		lineNo := n + 1
		rest := line
		if inMulti != "" {
			i := strings.Index(rest, inMulti)
			if i < 0 {
				continue
			}
			rest = rest[i+len(inMulti):]
			inMulti = ""
			depth, inMulti = scanValue(rest, depth)
			continue
		}
		if depth > 0 {
			depth, inMulti = scanValue(rest, depth)
			continue
		}
		t := strings.TrimSpace(rest)
		switch {
		case t == "" || t[0] == '#':
			continue
		case strings.HasPrefix(t, "[["):
			end := strings.Index(t, "]]")
			if end < 0 {
				continue
			}
			plain := strings.Join(splitKey(t[2:end]), ".")
			resolved := resolveHeader(plain, arrays, true)
			arrays[plain]++
			idx := arrays[plain] - 1
			prefix = resolved + "[" + strconv.Itoa(idx) + "]"
			if _, ok := li[resolved]; !ok {
				li[resolved] = lineNo
			}
			li[prefix] = lineNo
		case t[0] == '[':
			end := strings.Index(t, "]")
			if end < 0 {
				continue
			}
			prefix = resolveHeader(strings.Join(splitKey(t[1:end]), "."), arrays, false)
			li[prefix] = lineNo
		default:
			eq := keyEnd(t)
			if eq < 0 {
				continue
			}
			key := strings.Join(splitKey(t[:eq]), ".")
			full := key
			if prefix != "" {
				full = prefix + "." + key
			}
			if _, ok := li[full]; !ok {
				li[full] = lineNo
			}
			depth, inMulti = scanValue(t[eq+1:], 0)
		}
	}
	return li
}

// resolveHeader turns "health.config" into "health[2].config" using the
// latest element of every array-of-tables prefix. For an [[x]] header the
// last component itself is not indexed here.
func resolveHeader(plain string, arrays map[string]int, isArray bool) string {
	parts := strings.Split(plain, ".")
	var b strings.Builder
	acc := ""
	for i, p := range parts {
		if i > 0 {
			b.WriteByte('.')
			acc += "."
		}
		acc += p
		b.WriteString(p)
		last := i == len(parts)-1
		if n, ok := arrays[acc]; ok && !(last && isArray) {
			b.WriteString("[" + strconv.Itoa(n-1) + "]")
		}
	}
	return b.String()
}

// keyEnd finds the '=' that ends a key, outside quotes.
func keyEnd(t string) int {
	var q byte
	for i := 0; i < len(t); i++ {
		c := t[i]
		switch {
		case q != 0:
			if c == q {
				q = 0
			}
		case c == '"' || c == '\'':
			q = c
		case c == '=':
			return i
		}
	}
	return -1
}

// splitKey splits a dotted key, honouring quoted parts.
func splitKey(k string) []string {
	var parts []string
	var cur strings.Builder
	var q byte
	for i := 0; i < len(k); i++ {
		c := k[i]
		switch {
		case q != 0:
			if c == q {
				q = 0
			} else {
				cur.WriteByte(c)
			}
		case c == '"' || c == '\'':
			q = c
		case c == '.':
			parts = append(parts, strings.TrimSpace(cur.String()))
			cur.Reset()
		case c == ' ' || c == '\t':
		default:
			cur.WriteByte(c)
		}
	}
	return append(parts, strings.TrimSpace(cur.String()))
}

// scanValue walks a value's text and returns the bracket depth left open and
// the delimiter of a multi-line string left open.
func scanValue(s string, depth int) (int, string) {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '#':
			return depth, ""
		case '[', '{':
			depth++
		case ']', '}':
			if depth > 0 {
				depth--
			}
		case '"', '\'':
			delim := string(c)
			if strings.HasPrefix(s[i:], strings.Repeat(delim, 3)) {
				end := strings.Index(s[i+3:], strings.Repeat(delim, 3))
				if end < 0 {
					return depth, strings.Repeat(delim, 3)
				}
				i += 3 + end + 2
				continue
			}
			for i++; i < len(s); i++ {
				if s[i] == '\\' && c == '"' {
					i++
					continue
				}
				if s[i] == c {
					break
				}
			}
		}
	}
	return depth, ""
}
