// Package policyload loads offpeak's TOML policy into the values of
// scheduler/policy: the built-in default, vendor drop-ins,
// /etc/offpeak/policy.toml and admin drop-ins, merged in that order,
// validated with errors that name the file, line and key.
package policyload

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/offpeak/offpeak/internal/cronspec"
	"github.com/offpeak/offpeak/internal/paths"
	"github.com/offpeak/offpeak/internal/registry"
	"github.com/offpeak/offpeak/internal/safepath"
	"github.com/offpeak/offpeak/scheduler/policy"
)

// Options controls Load.
type Options struct {
	// Path names one policy file instead of the search order.
	Path string
	// Layout places the search order below a root directory.
	Layout paths.Layout
	// Now is the reference time for "the schedule never fires"; zero means
	// time.Now().
	Now time.Time
	// Builtins describes the built-in plugins, so that their settings are
	// checked with file and line and [installer] backend is one of them.
	// Nil checks neither.
	Builtins Catalog
}

// Catalog is what validation needs to know of the built-in plugins.
type Catalog interface {
	// Schema returns a pointer to a new zero settings struct (json tags)
	// for a built-in plugin, or nil for one that is not built in (a
	// third-party plugin, whose settings pass unchecked).
	Schema(kind registry.Kind, name string) any
	// Names lists the built-ins of a kind.
	Names(kind registry.Kind) []string
}

// listKeys are the arrays of tables and the key that makes a file append to
// the earlier list instead of replacing it.
var listKeys = map[string]string{
	"window":   "windows_append",
	"blackout": "blackouts_append",
	"health":   "health_append",
	"detect":   "detect_append",
}

func isAppendKey(k string) bool {
	for _, a := range listKeys {
		if a == k {
			return true
		}
	}
	return false
}

// sourceKey carries an entry's file and line through the merge.
const sourceKey = "\x00source"

// Files returns the policy files of the search order that exist, in merge
// order: vendor drop-ins, /etc/offpeak/policy.toml, admin drop-ins, each
// directory sorted by name.
func Files(l paths.Layout) ([]string, error) {
	var out []string
	for _, step := range []struct {
		path string
		dir  bool
	}{{l.VendorPolicyDir(), true}, {l.PolicyFile(), false}, {l.PolicyDir(), true}} {
		if !step.dir {
			if _, err := os.Stat(step.path); err == nil {
				out = append(out, step.path)
			} else if !errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("policy: %w", err)
			}
			continue
		}
		ents, err := os.ReadDir(step.path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("policy: %w", err)
		}
		// Refused even when empty: whoever can add a file here can add
		// commands that run as root.
		if err := safepath.Check(step.path); err != nil {
			return nil, fmt.Errorf("policy: drop-in directory %s refused: %w", step.path, err)
		}
		var names []string
		for _, e := range ents {
			if !e.IsDir() && strings.HasSuffix(e.Name(), ".toml") && !strings.HasPrefix(e.Name(), ".") {
				names = append(names, e.Name())
			}
		}
		sort.Strings(names)
		for _, n := range names {
			out = append(out, filepath.Join(step.path, n))
		}
	}
	return out, nil
}

// Load reads, merges and validates the policy. With no file anywhere the
// built-in default applies. Every problem of every file is reported at once
// as Errors. A policy file or drop-in directory that someone other than
// root (or the user running offpeak) could change is refused (ErrUnsafe;
// see safepath): a policy names commands that run as root.
func Load(opts Options) (*policy.Policy, error) {
	files := []string{opts.Path}
	if opts.Path == "" {
		var err error
		if files, err = Files(opts.Layout); err != nil {
			return nil, err
		}
	}
	srcs := make([]fileSrc, 0, len(files))
	for _, f := range files {
		if err := safepath.Check(f); err != nil {
			return nil, fmt.Errorf("policy: %s refused: %w", f, err)
		}
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("policy: %w", err)
		}
		srcs = append(srcs, fileSrc{name: f, data: b})
	}
	return build(srcs, opts)
}

// Parse validates one file's content layered on the built-in default, as
// Load does with --policy.
func Parse(name string, data []byte, opts Options) (*policy.Policy, error) {
	return build([]fileSrc{{name: name, data: data}}, opts)
}

// Default returns the built-in default policy.
func Default() *policy.Policy {
	p, err := build(nil, Options{})
	if err != nil {
		panic("built-in default policy is invalid: " + err.Error())
	}
	return p
}

type fileSrc struct {
	name string
	data []byte
}

func build(files []fileSrc, opts Options) (*policy.Policy, error) {
	if opts.Now.IsZero() {
		opts.Now = time.Now()
	}
	layers := append([]fileSrc{{name: "", data: []byte(DefaultTOML)}}, files...)
	merged := map[string]any{}
	origin := map[string]policy.Source{}
	var errs Errors
	for _, f := range layers {
		m, c := parseFile(f, opts)
		errs = append(errs, c.errs...)
		if len(c.errs) == 0 {
			mergeInto(merged, m, "", c, origin)
		}
	}
	if len(errs) > 0 {
		return nil, errs.sorted()
	}
	p := &policy.Policy{}
	c := &collector{file: "(merged)", lines: lineIndex{}}
	c.decodeTable("", merged, reflect.ValueOf(p).Elem())
	if len(c.errs) > 0 {
		return nil, c.errs
	}
	if b := p.Installer.Backend; b != "" && b != "none" && origin["detect"].File == "" {
		// The installer knows best whether an update is staged; the default
		// sentinel files only serve hosts without one.
		p.Detect = []policy.Detect{{Kind: policy.DetectInstaller, Source: origin["installer.backend"]}}
	}
	applyDefaults(p)
	for _, f := range files {
		p.Sources = append(p.Sources, f.name)
	}
	if errs := validateMerged(p, origin); len(errs) > 0 {
		return nil, errs.sorted()
	}
	return p, nil
}

// parseFile parses and validates one file on its own, so its errors carry
// its name and lines.
func parseFile(f fileSrc, opts Options) (map[string]any, *collector) {
	c := &collector{file: f.name, lines: indexLines(string(f.data))}
	m := map[string]any{}
	if bytes.IndexByte(f.data, 0) >= 0 {
		c.errs = append(c.errs, FieldError{File: f.name, Line: 1, Msg: "not a text file"})
		return nil, c
	}
	if _, err := toml.Decode(string(f.data), &m); err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			c.errs = append(c.errs, FieldError{File: f.name, Line: pe.Position.Line, Key: pe.LastKey, Msg: pe.Message})
		} else {
			c.errs = append(c.errs, FieldError{File: f.name, Line: 1, Msg: err.Error()})
		}
		return nil, c
	}
	fixLocalTimes(m, "", c)
	p := &policy.Policy{}
	c.decodeTable("", m, reflect.ValueOf(p).Elem())
	c.validateFile(p, m, opts)
	// Tag list entries with their origin for errors found after merging.
	for k := range listKeys {
		if v, ok := m[k]; ok {
			m[k] = normalizeTables(v)
		}
		if tables, ok := m[k].([]map[string]any); ok {
			for i, t := range tables {
				t[sourceKey] = policy.Source{File: f.name, Line: c.lines.lookup(fmt.Sprintf("%s[%d]", k, i))}
			}
		}
	}
	return m, c
}

// normalizeTables turns an inline array of tables into []map[string]any so
// the merge sees one shape.
func normalizeTables(v any) any {
	arr, ok := v.([]any)
	if !ok {
		return v
	}
	out := make([]map[string]any, 0, len(arr))
	for _, a := range arr {
		t, ok := a.(map[string]any)
		if !ok {
			return v
		}
		out = append(out, t)
	}
	return out
}

// mergeInto layers src over dst: scalars and arrays replace, tables merge key
// by key, except plugin "config" tables and "headers", which replace whole
// (settings of one plugin must not leak into another's); arrays of tables
// replace unless the file sets the matching *_append key.
func mergeInto(dst, src map[string]any, prefix string, c *collector, origin map[string]policy.Source) {
	for k, v := range src {
		path := joinPath(prefix, k)
		if prefix == "" && isAppendKey(k) {
			continue
		}
		origin[path] = policy.Source{File: c.file, Line: c.lines.lookup(path)}
		if appendKey, isList := listKeys[k]; isList && prefix == "" {
			tables, _ := v.([]map[string]any)
			if app, _ := src[appendKey].(bool); app {
				prev, _ := dst[k].([]map[string]any)
				dst[k] = append(append([]map[string]any{}, prev...), tables...)
			} else {
				dst[k] = tables
			}
			continue
		}
		if sm, ok := v.(map[string]any); ok && k != "config" && k != "headers" {
			dm, ok := dst[k].(map[string]any)
			if !ok {
				dm = map[string]any{}
				dst[k] = dm
			}
			mergeInto(dm, sm, path, c, origin)
			continue
		}
		dst[k] = v
	}
}

// localZoneName is the location BurntSushi/toml gives local date-times.
func isLocal(t time.Time) bool {
	return strings.HasPrefix(t.Location().String(), "datetime-local") ||
		strings.HasPrefix(t.Location().String(), "date-local") ||
		strings.HasPrefix(t.Location().String(), "time-local")
}

// fixLocalTimes re-reads local dates and date-times of blackouts in the
// blackout's timezone (UTC when unset), so results never depend on the
// host's zone. They follow the rule of window starts: a wall-clock time that
// does not exist (spring-forward gap) is the first instant after the gap,
// one that happens twice (fall-back) its first occurrence. A local date is
// its 00:00, so a named date covers all of its wall-clock time even where
// midnight falls in a gap or a repeat.
func fixLocalTimes(m map[string]any, _ string, c *collector) {
	tables, _ := m["blackout"].([]map[string]any)
	for i, t := range tables {
		loc := time.UTC
		if tz, ok := t["timezone"].(string); ok && tz != "" {
			l, err := policy.LoadZone(tz)
			if err != nil {
				continue // reported by validation
			}
			loc = l
		}
		for _, k := range []string{"from", "until"} {
			v, ok := t[k].(time.Time)
			if !ok || !isLocal(v) {
				continue
			}
			if v.Location().String() == "time-local" {
				c.addf(fmt.Sprintf("blackout[%d].%s", i, k), "must include a date, not only a time of day")
				continue
			}
			wall := time.Date(v.Year(), v.Month(), v.Day(), v.Hour(), v.Minute(), v.Second(), v.Nanosecond(), time.UTC)
			t[k] = cronspec.Resolve(wall, loc)
		}
	}
}
