package policyload

import (
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/offpeak/offpeak/scheduler/policy"
)

// decodeTable fills the struct rv from a generic TOML table, reporting every
// unknown key and mistyped value instead of stopping at the first.
func (c *collector) decodeTable(path string, m map[string]any, rv reflect.Value) {
	fields, names := tomlFields(rv.Type())
	for _, k := range sortedKeys(m) {
		kp := joinPath(path, k)
		if k == sourceKey {
			if src, ok := m[k].(policy.Source); ok {
				if f := rv.FieldByName("Source"); f.IsValid() {
					f.Set(reflect.ValueOf(src))
				}
			}
			continue
		}
		if path == "" && isAppendKey(k) {
			if _, ok := m[k].(bool); !ok {
				c.addf(kp, "must be true or false")
			}
			continue
		}
		idx, ok := fields[k]
		if !ok {
			msg := "unknown key"
			if s := suggest(k, names); s != "" {
				msg += fmt.Sprintf("; did you mean %q?", s)
			} else {
				msg += "; valid keys: " + strings.Join(names, ", ")
			}
			c.addf(kp, "%s", msg)
			continue
		}
		c.decodeValue(kp, m[k], rv.Field(idx))
	}
}

var (
	durationType = reflect.TypeFor[policy.Duration]()
	timeType     = reflect.TypeFor[time.Time]()
)

// scalars maps a field kind to the Go type BurntSushi/toml decodes that TOML
// type into, and how to name it in an error.
var scalars = map[reflect.Kind]struct {
	typ  reflect.Type
	name string
}{
	reflect.String: {reflect.TypeFor[string](), "a string"},
	reflect.Int:    {reflect.TypeFor[int64](), "an integer"},
	reflect.Bool:   {reflect.TypeFor[bool](), "true or false"},
}

func (c *collector) decodeValue(path string, v any, rv reflect.Value) {
	switch {
	case rv.Type() == durationType:
		s, ok := v.(string)
		if !ok {
			c.addf(path, "must be a duration string such as \"30m\" or \"2h\", not %s", tomlTypeName(v))
			return
		}
		d, err := policy.ParseDuration(s)
		if err != nil {
			c.addf(path, "%v", err)
			return
		}
		rv.SetInt(int64(d))
		return
	case rv.Type() == timeType:
		t, ok := v.(time.Time)
		if !ok {
			c.addf(path, "must be a TOML date-time such as 2026-12-20T00:00:00Z, not %s", tomlTypeName(v))
			return
		}
		rv.Set(reflect.ValueOf(t))
		return
	}
	if sc, ok := scalars[rv.Kind()]; ok {
		val := reflect.ValueOf(v)
		if !val.IsValid() || val.Type() != sc.typ {
			c.addf(path, "must be %s, not %s", sc.name, tomlTypeName(v))
			return
		}
		rv.Set(val.Convert(rv.Type()))
		return
	}
	switch rv.Kind() {
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			c.addf(path, "must be a table, not %s", tomlTypeName(v))
			return
		}
		c.decodeTable(path, m, rv)
	case reflect.Slice:
		c.decodeSlice(path, v, rv)
	case reflect.Map:
		m, ok := v.(map[string]any)
		if !ok {
			c.addf(path, "must be a table, not %s", tomlTypeName(v))
			return
		}
		if rv.Type().Elem().Kind() == reflect.Interface {
			// Plugin settings: passed through, checked by the plugin's schema.
			rv.Set(reflect.ValueOf(m))
			return
		}
		out := reflect.MakeMap(rv.Type())
		for _, k := range sortedKeys(m) {
			ev := reflect.New(rv.Type().Elem()).Elem()
			c.decodeValue(joinPath(path, k), m[k], ev)
			out.SetMapIndex(reflect.ValueOf(k), ev)
		}
		rv.Set(out)
	default:
		c.addf(path, "unsupported type %s", rv.Type())
	}
}

func (c *collector) decodeSlice(path string, v any, rv reflect.Value) {
	elem := rv.Type().Elem()
	if elem.Kind() == reflect.Struct && elem != timeType {
		tables, ok := v.([]map[string]any)
		if !ok {
			if arr, isArr := v.([]any); isArr {
				tables = make([]map[string]any, 0, len(arr))
				for i, a := range arr {
					m, isMap := a.(map[string]any)
					if !isMap {
						c.addf(fmt.Sprintf("%s[%d]", path, i), "must be a table, not %s", tomlTypeName(a))
						return
					}
					tables = append(tables, m)
				}
			} else {
				c.addf(path, "must be an array of tables ([[%s]]), not %s", lastKey(path), tomlTypeName(v))
				return
			}
		}
		out := reflect.MakeSlice(rv.Type(), len(tables), len(tables))
		for i, m := range tables {
			ip := path + "[" + strconv.Itoa(i) + "]"
			if f := out.Index(i).FieldByName("Source"); f.IsValid() {
				f.Set(reflect.ValueOf(policy.Source{File: c.file, Line: c.lines.lookup(ip)}))
			}
			c.decodeTable(ip, m, out.Index(i))
		}
		rv.Set(out)
		return
	}
	arr, ok := v.([]any)
	if !ok {
		c.addf(path, "must be an array, not %s", tomlTypeName(v))
		return
	}
	out := reflect.MakeSlice(rv.Type(), len(arr), len(arr))
	for i, a := range arr {
		c.decodeValue(fmt.Sprintf("%s[%d]", path, i), a, out.Index(i))
	}
	rv.Set(out)
}

// tomlFields maps TOML key -> field index for a struct type.
func tomlFields(t reflect.Type) (map[string]int, []string) {
	fields := map[string]int{}
	var names []string
	for i := range t.NumField() {
		tag, _, _ := strings.Cut(t.Field(i).Tag.Get("toml"), ",")
		if tag == "" || tag == "-" {
			continue
		}
		fields[tag] = i
		names = append(names, tag)
	}
	return fields, names
}

func tomlTypeName(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case time.Time:
		return "a date-time"
	case []map[string]any:
		return "an array of tables"
	case []any:
		return "an array"
	case map[string]any:
		return "a table"
	default:
		return fmt.Sprintf("%T", v)
	}
}

func joinPath(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

func lastKey(path string) string {
	if i := strings.LastIndexByte(path, '.'); i >= 0 {
		return path[i+1:]
	}
	return path
}

func sortedKeys(m map[string]any) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
