// Package migrate turns the configuration of the reboot managers offpeak
// replaces — locksmith, zincati, kured — into an offpeak policy: TOML text
// whose comments name the source line of every setting, plus the settings
// that have no equivalent and the differences an operator must know.
//
// It produces text only. The caller validates the result with the policy
// loader, so this package stays independent of the policy's value types.
package migrate

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// ErrInvalid marks source configuration the source tool itself would
// refuse, or that cannot be read; errors wrapping it name the file and line.
var ErrInvalid = errors.New("invalid source configuration")

// Source is one input file.
type Source struct {
	Name string
	Data []byte
}

// Options tune a migration.
type Options struct {
	// Timezone is the IANA zone for times the source reads in the host's
	// local zone (locksmith always, zincati's "localtime", kured's
	// "Local"). Empty means UTC.
	Timezone string
	// Now dates the notes about the zone's next clock change; zero means
	// time.Now().
	Now time.Time
}

func (o Options) zone() (*time.Location, string, error) {
	name := o.Timezone
	if name == "" {
		name = "UTC"
	}
	if strings.EqualFold(name, "Local") || strings.EqualFold(name, "localtime") {
		return nil, "", fmt.Errorf("--timezone %q: name an IANA zone such as \"Europe/Berlin\"; a policy must mean the same instants on every host", name)
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, "", fmt.Errorf("--timezone %q: unknown time zone (use an IANA name such as \"Europe/Berlin\")", name)
	}
	return loc, name, nil
}

func (o Options) now() time.Time {
	if o.Now.IsZero() {
		return time.Now()
	}
	return o.Now
}

// Pos is where a setting was read.
type Pos struct {
	File string
	Line int
}

func (p Pos) String() string {
	if p.Line <= 0 {
		return p.File
	}
	return fmt.Sprintf("%s:%d", p.File, p.Line)
}

// Note is a remark about one source setting, or about the whole migration
// when Key is empty.
type Note struct {
	Pos  Pos
	Key  string
	Text string
}

func (n Note) String() string {
	var b strings.Builder
	if n.Pos.File != "" {
		b.WriteString(n.Pos.String())
		b.WriteString(": ")
	}
	if n.Key != "" {
		b.WriteString(n.Key)
		b.WriteString(": ")
	}
	b.WriteString(n.Text)
	return b.String()
}

// Result is a migrated policy.
type Result struct {
	// Policy is the offpeak policy, TOML with comments.
	Policy []byte
	// Notes are differences from the source tool and steps the operator
	// must take; they are also comments at the top of Policy.
	Notes []Note
	// Unmapped lists source settings offpeak has no equivalent for; they
	// are also comments at the end of Policy.
	Unmapped []Note
}

// Tool migrates one source tool's configuration.
type Tool struct {
	Name string
	// Files says what FILE arguments the tool takes, for help texts.
	Files   string
	Migrate func(srcs []Source, opts Options) (*Result, error)
}

// Tools lists the source tools offpeak migrates from.
func Tools() []Tool {
	return []Tool{
		{Name: "locksmith", Files: "locksmith's update.conf environment files (/usr/share/flatcar/update.conf, then /etc/flatcar/update.conf; or /etc/coreos/update.conf), later files win", Migrate: Locksmith},
		{Name: "zincati", Files: "zincati's TOML drop-ins or their directories (/usr/lib/zincati/config.d, /run/zincati/config.d, /etc/zincati/config.d), merged as zincati merges them", Migrate: Zincati},
		{Name: "kured", Files: "kured's flags (one or more per line) or a kured DaemonSet manifest (YAML)", Migrate: Kured},
	}
}

// Lookup returns the tool called name.
func Lookup(name string) (Tool, error) {
	names := make([]string, 0, 3)
	for _, t := range Tools() {
		if t.Name == name {
			return t, nil
		}
		names = append(names, t.Name)
	}
	return Tool{}, fmt.Errorf("unknown source %q (one of %s)", name, strings.Join(names, ", "))
}

// InputError is bad source configuration, located by file, line and key.
type InputError struct{ Note }

func (e *InputError) Error() string { return e.Note.String() }

// Unwrap makes every InputError match ErrInvalid.
func (e *InputError) Unwrap() error { return ErrInvalid }

func errorf(p Pos, key, format string, args ...any) error {
	return &InputError{Note{Pos: p, Key: key, Text: fmt.Sprintf(format, args...)}}
}

// sortNotes orders notes by file order, then line.
func sortNotes(notes []Note, files []string) {
	slices.SortStableFunc(notes, func(a, b Note) int {
		ia, ib := slices.Index(files, a.Pos.File), slices.Index(files, b.Pos.File)
		if ia != ib {
			return ia - ib
		}
		return a.Pos.Line - b.Pos.Line
	})
}
