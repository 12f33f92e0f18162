package migrate

import (
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/offpeak/offpeak/internal/printable"
)

// doc is the policy being written: settings with the comment lines that say
// where each came from, in the order they are printed.
type doc struct {
	tool     string
	files    []string
	top      []setting
	tables   []*table
	notes    []Note
	unmapped []Note
}

type setting struct {
	key   string
	value string // a TOML literal
	why   []string
}

type table struct {
	header   string // "node", "lock.config", "window" …
	array    bool   // [[header]]
	why      []string
	settings []setting
}

func newDoc(tool string, srcs []Source) *doc {
	d := &doc{tool: tool}
	for _, s := range srcs {
		d.files = append(d.files, s.Name)
	}
	return d
}

// set adds key = value to the top level, or to table header (created on
// first use, in that order).
func (d *doc) set(header, key, value string, why ...string) {
	s := setting{key: key, value: value, why: why}
	if header == "" {
		d.top = append(d.top, s)
		return
	}
	d.tableNamed(header).settings = append(d.tableNamed(header).settings, s)
}

func (d *doc) tableNamed(header string) *table {
	for _, t := range d.tables {
		if t.header == header && !t.array {
			return t
		}
	}
	t := &table{header: header}
	d.tables = append(d.tables, t)
	return t
}

// entry starts a new [[header]] element.
func (d *doc) entry(header string, why ...string) *table {
	t := &table{header: header, array: true, why: why}
	d.tables = append(d.tables, t)
	return t
}

// subtable starts a [header] table that belongs to the [[…]] entry before it.
func (d *doc) subtable(header string) *table {
	t := &table{header: header}
	d.tables = append(d.tables, t)
	return t
}

func (t *table) set(key, value string, why ...string) {
	t.settings = append(t.settings, setting{key: key, value: value, why: why})
}

func (d *doc) note(p Pos, key, format string, args ...any) {
	d.notes = append(d.notes, Note{Pos: p, Key: key, Text: fmt.Sprintf(format, args...)})
}

func (d *doc) noEquivalent(p Pos, key, format string, args ...any) {
	d.unmapped = append(d.unmapped, Note{Pos: p, Key: key, Text: fmt.Sprintf(format, args...)})
}

// tableOrder is the order tables are printed in, by their first key.
var tableOrder = []string{"node", "window", "lock", "detect", "health", "installer", "reboot", "agent"}

// result renders the policy.
func (d *doc) result() *Result {
	sortNotes(d.unmapped, d.files)
	rank := func(t *table) int {
		root, _, _ := strings.Cut(t.header, ".")
		if i := slices.Index(tableOrder, root); i >= 0 {
			return i
		}
		return len(tableOrder)
	}
	slices.SortStableFunc(d.tables, func(a, b *table) int { return rank(a) - rank(b) })
	var b strings.Builder
	fmt.Fprintf(&b, "# offpeak policy migrated from %s by `offpeak migrate %s`.\n", d.tool, d.tool)
	writeComment(&b, "", "  ", "Read, in this order: "+strings.Join(d.files, ", "))
	b.WriteString("# The comment above each setting names the line it came from. Check it with\n")
	b.WriteString("#   offpeak policy validate --policy FILE && offpeak next --policy FILE\n")
	if len(d.notes) > 0 {
		b.WriteString("#\n# Before switching over (also printed on stderr):\n")
		for _, n := range d.notes {
			writeComment(&b, "- ", "  ", n.String())
		}
	}
	for _, s := range d.top {
		b.WriteString("\n")
		writeSetting(&b, s)
	}
	for _, t := range d.tables {
		b.WriteString("\n")
		for _, w := range t.why {
			writeComment(&b, "", "", w)
		}
		if t.array {
			fmt.Fprintf(&b, "[[%s]]\n", t.header)
		} else {
			fmt.Fprintf(&b, "[%s]\n", t.header)
		}
		for _, s := range t.settings {
			writeSetting(&b, s)
		}
	}
	if len(d.unmapped) > 0 {
		b.WriteString("\n# Not migrated: no offpeak equivalent (also printed on stderr).\n")
		for _, n := range d.unmapped {
			writeComment(&b, "- ", "  ", n.String())
		}
	}
	return &Result{Policy: []byte(b.String()), Notes: d.notes, Unmapped: d.unmapped}
}

func writeSetting(b *strings.Builder, s setting) {
	for _, w := range s.why {
		writeComment(b, "", "", w)
	}
	fmt.Fprintf(b, "%s = %s\n", s.key, s.value)
}

// writeComment writes text as comment lines of at most about 88 columns;
// the first line starts with first, the others with rest.
func writeComment(b *strings.Builder, first, rest, text string) {
	const width = 88
	lead := first
	line := ""
	flush := func() {
		b.WriteString(strings.TrimRight("# "+lead+line, " "))
		b.WriteString("\n")
		lead, line = rest, ""
	}
	for _, w := range strings.Fields(printable.String(text)) {
		if line != "" && utf8.RuneCountInString(lead+line+w)+2 > width {
			flush()
		}
		if line != "" {
			line += " "
		}
		line += w
	}
	flush()
}

// tomlString quotes s as a TOML basic string.
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\t':
			b.WriteString(`\t`)
		case '\r':
			b.WriteString(`\r`)
		default:
			if r < 0x20 || r == 0x7f {
				fmt.Fprintf(&b, `\u%04X`, r)
			} else {
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('"')
	return b.String()
}

func tomlStrings(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = tomlString(s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

func tomlInt(n int) string { return strconv.Itoa(n) }

func tomlBool(v bool) string { return strconv.FormatBool(v) }

// fmtDuration prints d as offpeak policies write durations: "1h30m", "90s".
func fmtDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// cronDays writes a set of weekdays as a cron day-of-week field: "*" for
// all seven, else names with runs of three or more as ranges ("MON-FRI").
func cronDays(days map[time.Weekday]bool) string {
	if len(days) == 7 {
		return "*"
	}
	var ds []int
	for d := range days {
		ds = append(ds, int(d))
	}
	sort.Ints(ds)
	names := []string{"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"}
	var parts []string
	for i := 0; i < len(ds); {
		j := i
		for j+1 < len(ds) && ds[j+1] == ds[j]+1 {
			j++
		}
		if j-i >= 2 {
			parts = append(parts, names[ds[i]]+"-"+names[ds[j]])
		} else {
			for k := i; k <= j; k++ {
				parts = append(parts, names[ds[k]])
			}
		}
		i = j + 1
	}
	return strings.Join(parts, ",")
}

// quoteValue shows a source value in a comment, with the password of a
// URL's user information masked (the value itself may still need it).
func quoteValue(s string) string {
	if u, err := url.Parse(s); err == nil && u.User != nil {
		if _, ok := u.User.Password(); ok {
			s = u.Redacted()
		}
	}
	return strconv.Quote(s)
}

// redact shows a source assignment, without its value when it is secret.
func redact(key, value string, secret bool) string {
	if secret {
		return key + "=(redacted)"
	}
	return key + "=" + value
}
