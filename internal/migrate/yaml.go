package migrate

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// A small reader for the YAML of Kubernetes manifests, enough to find a
// DaemonSet's container command, args, env and mounts with their lines:
// block mappings and sequences, plain and quoted scalars, flow sequences of
// scalars, block scalars (| and >), comments and "---" documents. Anchors
// and tags are dropped; aliases read as plain text.

type ynode struct {
	line   int
	scalar string
	isMap  bool
	isSeq  bool
	keys   []string
	vals   map[string]*ynode
	items  []*ynode
}

func (n *ynode) get(path ...string) *ynode {
	for _, k := range path {
		if n == nil || !n.isMap {
			return nil
		}
		n = n.vals[k]
	}
	return n
}

func (n *ynode) str() string {
	if n == nil || n.isMap || n.isSeq {
		return ""
	}
	return n.scalar
}

type yline struct {
	indent int
	text   string
	no     int
}

type yparser struct {
	lines []yline
	pos   int
	file  string
}

var manifestRe = regexp.MustCompile(`(?m)^(kind|apiVersion):\s*\S`)

func looksLikeManifest(b []byte) bool { return manifestRe.Match(b) }

// parseYAML returns the documents of src.
func parseYAML(src Source) ([]*ynode, error) {
	var docs []*ynode
	var cur []yline
	flush := func() error {
		if len(cur) == 0 {
			return nil
		}
		p := &yparser{lines: cur, file: src.Name}
		n, err := p.block(cur[0].indent)
		if err != nil {
			return err
		}
		if p.pos < len(p.lines) {
			l := p.lines[p.pos]
			return errorf(Pos{src.Name, l.no}, "", "cannot read this YAML line (indentation?)")
		}
		docs = append(docs, n)
		cur = nil
		return nil
	}
	raw := strings.Split(strings.ReplaceAll(string(src.Data), "\r\n", "\n"), "\n")
	for i := 0; i < len(raw); i++ {
		l := raw[i]
		if strings.HasPrefix(l, "---") || strings.HasPrefix(l, "...") {
			if err := flush(); err != nil {
				return nil, err
			}
			continue
		}
		text := stripComment(l)
		t := strings.TrimLeft(text, " ")
		if strings.TrimSpace(t) == "" || strings.HasPrefix(t, "%") {
			continue
		}
		if strings.HasPrefix(t, "\t") {
			return nil, errorf(Pos{src.Name, i + 1}, "", "tabs are not allowed for YAML indentation")
		}
		yl := yline{indent: len(text) - len(t), text: strings.TrimRight(t, " \t"), no: i + 1}
		// A block scalar takes the more indented lines after it verbatim.
		if v, ok := blockScalarHeader(yl.text); ok {
			var body []string
			minIndent := -1
			for i+1 < len(raw) {
				nl := raw[i+1]
				nt := strings.TrimLeft(nl, " ")
				ind := len(nl) - len(nt)
				if strings.TrimSpace(nl) != "" && ind <= yl.indent {
					break
				}
				i++
				if strings.TrimSpace(nl) == "" {
					body = append(body, "")
					continue
				}
				if minIndent < 0 {
					minIndent = ind
				}
				body = append(body, nl[min(minIndent, ind):])
			}
			sep := "\n"
			if strings.HasPrefix(v.style, ">") {
				sep = " "
			}
			yl.text = v.prefix + strconv.Quote(strings.TrimRight(strings.Join(body, sep), "\n "))
		}
		cur = append(cur, yl)
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return docs, nil
}

type blockHeader struct{ prefix, style string }

// blockScalarHeader recognises "key: |" and "- >-" lines.
func blockScalarHeader(t string) (blockHeader, bool) {
	for _, style := range []string{"|-", "|+", "|", ">-", ">+", ">"} {
		if strings.HasSuffix(t, " "+style) || t == style || strings.HasSuffix(t, ":"+style) {
			return blockHeader{prefix: strings.TrimSuffix(t, style), style: style}, true
		}
	}
	return blockHeader{}, false
}

// stripComment removes a # comment outside quotes.
func stripComment(l string) string {
	var q byte
	for i := 0; i < len(l); i++ {
		c := l[i]
		switch {
		case q == '"' && c == '\\':
			i++
		case q != 0:
			if c == q {
				q = 0
			}
		case c == '"' || c == '\'':
			if i == 0 || l[i-1] == ' ' || l[i-1] == ':' || l[i-1] == '-' || l[i-1] == '[' || l[i-1] == ',' {
				q = c
			}
		case c == '#' && (i == 0 || l[i-1] == ' ' || l[i-1] == '\t'):
			return l[:i]
		}
	}
	return l
}

func (p *yparser) peek() (yline, bool) {
	if p.pos >= len(p.lines) {
		return yline{}, false
	}
	return p.lines[p.pos], true
}

func (p *yparser) errf(l yline, format string, args ...any) error {
	return errorf(Pos{p.file, l.no}, "", format, args...)
}

// block parses the node whose lines start at indent.
func (p *yparser) block(indent int) (*ynode, error) {
	l, ok := p.peek()
	if !ok {
		return &ynode{}, nil
	}
	if l.text == "-" || strings.HasPrefix(l.text, "- ") {
		return p.sequence(indent)
	}
	return p.mapping(indent)
}

func (p *yparser) sequence(indent int) (*ynode, error) {
	n := &ynode{isSeq: true}
	for {
		l, ok := p.peek()
		if !ok || l.indent != indent || !(l.text == "-" || strings.HasPrefix(l.text, "- ")) {
			return n, nil
		}
		if l.indent < indent {
			return n, nil
		}
		rest := strings.TrimLeft(strings.TrimPrefix(l.text, "-"), " ")
		if rest == "" {
			p.pos++
			nl, ok := p.peek()
			if !ok || nl.indent <= indent {
				n.items = append(n.items, &ynode{line: l.no})
				continue
			}
			item, err := p.block(nl.indent)
			if err != nil {
				return nil, err
			}
			n.items = append(n.items, item)
			continue
		}
		// "- key: value" opens a mapping whose keys line up with "key".
		col := indent + len(l.text) - len(rest)
		if isMapEntry(rest) {
			p.lines[p.pos] = yline{indent: col, text: rest, no: l.no}
			item, err := p.mapping(col)
			if err != nil {
				return nil, err
			}
			n.items = append(n.items, item)
			continue
		}
		p.pos++
		v, err := p.scalarOrFlow(l, rest)
		if err != nil {
			return nil, err
		}
		n.items = append(n.items, v)
	}
}

// isMapEntry reports whether t is "key:" or "key: value" (not a URL).
func isMapEntry(t string) bool {
	k, _, ok := cutKey(t)
	return ok && k != ""
}

// cutKey splits "key: value" at the first ": " (or a final ":") outside quotes.
func cutKey(t string) (key, value string, ok bool) {
	if strings.HasPrefix(t, "[") || strings.HasPrefix(t, "{") {
		return "", "", false
	}
	if t[0] == '"' || t[0] == '\'' {
		q := t[0]
		end := strings.IndexByte(t[1:], q)
		if end < 0 {
			return "", "", false
		}
		rest := t[end+2:]
		if rest == ":" || strings.HasPrefix(rest, ": ") {
			return t[1 : end+1], strings.TrimSpace(strings.TrimPrefix(rest, ":")), true
		}
		return "", "", false
	}
	if i := strings.Index(t, ": "); i >= 0 {
		return strings.TrimSpace(t[:i]), strings.TrimSpace(t[i+2:]), true
	}
	if strings.HasSuffix(t, ":") {
		return strings.TrimSpace(t[:len(t)-1]), "", true
	}
	return "", "", false
}

func (p *yparser) mapping(indent int) (*ynode, error) {
	n := &ynode{isMap: true, vals: map[string]*ynode{}}
	for {
		l, ok := p.peek()
		if !ok || l.indent < indent {
			return n, nil
		}
		if l.indent > indent {
			return nil, p.errf(l, "unexpected indentation")
		}
		key, val, ok := cutKey(l.text)
		if !ok {
			if l.text == "-" || strings.HasPrefix(l.text, "- ") {
				return n, nil // a sequence item of an enclosing sequence
			}
			return nil, p.errf(l, "want \"key: value\"")
		}
		p.pos++
		var v *ynode
		if val == "" {
			nl, ok := p.peek()
			switch {
			case ok && nl.indent > indent:
				var err error
				if v, err = p.block(nl.indent); err != nil {
					return nil, err
				}
			case ok && nl.indent == indent && (nl.text == "-" || strings.HasPrefix(nl.text, "- ")):
				var err error
				if v, err = p.sequence(indent); err != nil {
					return nil, err
				}
			default:
				v = &ynode{line: l.no}
			}
		} else {
			var err error
			if v, err = p.scalarOrFlow(l, val); err != nil {
				return nil, err
			}
			// A plain scalar may go on over more indented lines.
			for {
				nl, ok := p.peek()
				if !ok || nl.indent <= indent || v.isSeq || isMapEntry(nl.text) {
					break
				}
				v.scalar += " " + nl.text
				p.pos++
			}
		}
		if v.line == 0 {
			v.line = l.no
		}
		if n.line == 0 {
			n.line = l.no
		}
		if _, dup := n.vals[key]; !dup {
			n.keys = append(n.keys, key)
		}
		n.vals[key] = v
	}
}

var anchorRe = regexp.MustCompile(`^(&\S+|!\S*)\s+`)

func (p *yparser) scalarOrFlow(l yline, t string) (*ynode, error) {
	for anchorRe.MatchString(t) {
		t = anchorRe.ReplaceAllString(t, "")
	}
	if strings.HasPrefix(t, "[") {
		if !strings.HasSuffix(t, "]") {
			return nil, p.errf(l, "a flow sequence must end on its line")
		}
		n := &ynode{isSeq: true, line: l.no}
		for _, part := range splitFlow(t[1 : len(t)-1]) {
			s, err := unquote(strings.TrimSpace(part))
			if err != nil {
				return nil, p.errf(l, "%v", err)
			}
			n.items = append(n.items, &ynode{line: l.no, scalar: s})
		}
		return n, nil
	}
	s, err := unquote(t)
	if err != nil {
		return nil, p.errf(l, "%v", err)
	}
	return &ynode{line: l.no, scalar: s}, nil
}

// splitFlow splits "a, 'b, c', d" at commas outside quotes.
func splitFlow(s string) []string {
	var parts []string
	var q byte
	last := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case q == '"' && c == '\\':
			i++
		case q != 0:
			if c == q {
				q = 0
			}
		case c == '"' || c == '\'':
			q = c
		case c == ',':
			parts = append(parts, s[last:i])
			last = i + 1
		}
	}
	if rest := strings.TrimSpace(s[last:]); rest != "" || len(parts) > 0 {
		parts = append(parts, s[last:])
	}
	return parts
}

func unquote(t string) (string, error) {
	switch {
	case strings.HasPrefix(t, "'"):
		if len(t) < 2 || !strings.HasSuffix(t, "'") {
			return "", fmt.Errorf("unterminated ' quote")
		}
		return strings.ReplaceAll(t[1:len(t)-1], "''", "'"), nil
	case strings.HasPrefix(t, `"`):
		s, err := strconv.Unquote(t)
		if err != nil {
			return "", fmt.Errorf("cannot read the quoted string %s", t)
		}
		return s, nil
	}
	return t, nil
}
