package migrate

import (
	"errors"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/offpeak/offpeak/internal/policyload"
)

// zincati's FleetLock id is this application id over /etc/machine-id.
const zincatiAppID = "de35106b6ec24688b63afddaa156679b"

// zset is one zincati setting with where it was read.
type zset struct {
	value any
	pos   Pos
	key   string
}

type zWindow struct {
	days   map[time.Weekday]bool
	hour   int
	minute int
	length time.Duration
	pos    Pos
	spell  []Note // day names zincati itself refuses
}

// zincatiConfig is zincati's configuration after merging the fragments:
// scalars from the last file that sets them, periodic windows from all.
type zincatiConfig struct {
	scalars map[string]zset
	windows []zWindow
}

// zincatiKeys are the keys zincati reads, with their TOML types.
var zincatiKeys = map[string]string{
	"agent.timing.steady_interval_secs": "integer",
	"cincinnati.base_url":               "string",
	"identity.group":                    "string",
	"identity.node_uuid":                "string",
	"identity.rollout_wariness":         "float",
	"updates.allow_downgrade":           "bool",
	"updates.enabled":                   "bool",
	"updates.strategy":                  "string",
	"updates.fleet_lock.base_url":       "string",
	"updates.periodic.time_zone":        "string",
}

// zincatiOrder orders the fragments as zincati does: by file name, a later
// file of the same name (from a later directory: /usr/lib, /run, /etc)
// replacing an earlier one.
func zincatiOrder(srcs []Source) []Source {
	byName := map[string]Source{}
	var names []string
	for _, s := range srcs {
		base := path.Base(s.Name)
		if _, ok := byName[base]; !ok {
			names = append(names, base)
		}
		byName[base] = s
	}
	slices.Sort(names)
	out := make([]Source, 0, len(names))
	for _, n := range names {
		out = append(out, byName[n])
	}
	return out
}

func readZincati(srcs []Source) (*zincatiConfig, []Note, error) {
	cfg := &zincatiConfig{scalars: map[string]zset{}}
	var ignored []Note
	for _, src := range srcs {
		text := string(src.Data)
		lineOf := policyload.KeyLines(text)
		var m map[string]any
		if _, err := toml.Decode(text, &m); err != nil {
			var pe toml.ParseError
			if errors.As(err, &pe) {
				return nil, nil, errorf(Pos{src.Name, pe.Position.Line}, pe.LastKey, "%s", pe.Message)
			}
			return nil, nil, errorf(Pos{src.Name, 0}, "", "%v", err)
		}
		at := func(key string) Pos { return Pos{src.Name, lineOf(key)} }
		var walk func(prefix string, m map[string]any) error
		walk = func(prefix string, m map[string]any) error {
			keys := make([]string, 0, len(m))
			for k := range m {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			for _, k := range keys {
				v := m[k]
				full := k
				if prefix != "" {
					full = prefix + "." + k
				}
				if full == "updates.periodic.window" {
					ws, err := zincatiWindows(v, full, at)
					if err != nil {
						return err
					}
					cfg.windows = append(cfg.windows, ws...)
					continue
				}
				if typ, ok := zincatiKeys[full]; ok {
					if got := tomlKind(v); got != typ {
						return errorf(at(full), full, "zincati wants a %s here, not a %s", typ, got)
					}
					cfg.scalars[full] = zset{value: v, pos: at(full), key: full}
					continue
				}
				if sub, ok := v.(map[string]any); ok && isZincatiTable(full) {
					if err := walk(full, sub); err != nil {
						return err
					}
					continue
				}
				ignored = append(ignored, Note{Pos: at(full), Key: full, Text: "not a zincati setting (zincati ignores it)"})
			}
			return nil
		}
		if err := walk("", m); err != nil {
			return nil, nil, err
		}
	}
	return cfg, ignored, nil
}

func isZincatiTable(p string) bool {
	for k := range zincatiKeys {
		if strings.HasPrefix(k, p+".") {
			return true
		}
	}
	return p == "updates.periodic"
}

func tomlKind(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case int64:
		return "integer"
	case float64:
		return "float"
	case bool:
		return "bool"
	case map[string]any:
		return "table"
	case []any, []map[string]any:
		return "array"
	}
	return fmt.Sprintf("%T", v)
}

var zincatiDays = map[string]time.Weekday{
	"mon": time.Monday, "monday": time.Monday,
	"tue": time.Tuesday, "tuesday": time.Tuesday,
	"wed": time.Wednesday, "wednesday": time.Wednesday,
	"thu": time.Thursday, "thursday": time.Thursday,
	"fri": time.Friday, "friday": time.Friday,
	"sat": time.Saturday, "saturday": time.Saturday,
	"sun": time.Sunday, "sunday": time.Sunday,
}

// zincatiWindows reads [[updates.periodic.window]] entries as zincati does:
// every key required, days in English (full or three letters, any case),
// start_time "h:mm" (24h), length_minutes from 1 to a week.
func zincatiWindows(v any, key string, at func(string) Pos) ([]zWindow, error) {
	var tables []map[string]any
	switch t := v.(type) {
	case []map[string]any:
		tables = t
	case []any:
		for _, e := range t {
			m, ok := e.(map[string]any)
			if !ok {
				return nil, errorf(at(key), key, "want an array of tables ([[updates.periodic.window]])")
			}
			tables = append(tables, m)
		}
	default:
		return nil, errorf(at(key), key, "want an array of tables ([[updates.periodic.window]])")
	}
	var out []zWindow
	for i, t := range tables {
		p := fmt.Sprintf("%s[%d]", key, i)
		w := zWindow{pos: at(p), days: map[time.Weekday]bool{}}
		for _, req := range []string{"days", "start_time", "length_minutes"} {
			if _, ok := t[req]; !ok {
				return nil, errorf(w.pos, key, "missing %s (zincati requires days, start_time and length_minutes)", req)
			}
		}
		days, ok := t["days"].([]any)
		if !ok {
			return nil, errorf(at(p+".days"), key+".days", "want an array of day names")
		}
		for _, d := range days {
			s, ok := d.(string)
			if !ok {
				return nil, errorf(at(p+".days"), key+".days", "want day names, not %v", d)
			}
			wd, ok := zincatiDays[strings.ToLower(s)]
			if !ok {
				return nil, errorf(at(p+".days"), key+".days", "unrecognized week day %q (Mon … Sun, or Monday … Sunday)", s)
			}
			if strings.EqualFold(s, "tuesday") {
				w.spell = append(w.spell, Note{Pos: at(p + ".days"), Key: key + ".days",
					Text: fmt.Sprintf("zincati itself refuses %q spelled out (its day table has a typo); offpeak reads it as Tuesday", s)})
			}
			w.days[wd] = true
		}
		st, ok := t["start_time"].(string)
		if !ok {
			return nil, errorf(at(p+".start_time"), key+".start_time", "want a string \"hh:mm\"")
		}
		h, m, err := zincatiTime(st)
		if err != nil {
			return nil, errorf(at(p+".start_time"), key+".start_time", "%v", err)
		}
		w.hour, w.minute = h, m
		lm, ok := t["length_minutes"].(int64)
		switch {
		case !ok:
			return nil, errorf(at(p+".length_minutes"), key+".length_minutes", "want a whole number of minutes")
		case lm <= 0:
			return nil, errorf(at(p+".length_minutes"), key+".length_minutes", "must be greater than zero")
		case lm > 7*24*60:
			return nil, errorf(at(p+".length_minutes"), key+".length_minutes", "%d is longer than a week", lm)
		}
		w.length = time.Duration(lm) * time.Minute
		for k := range t {
			if k != "days" && k != "start_time" && k != "length_minutes" {
				return nil, errorf(at(p+"."+k), key+"."+k, "unknown key in a window (days, start_time, length_minutes)")
			}
		}
		if len(w.days) == 0 {
			// zincati accepts an empty set: the entry adds no window.
			continue
		}
		out = append(out, w)
	}
	return out, nil
}

// zincatiTime parses "h:mm" as zincati does.
func zincatiTime(s string) (int, int, error) {
	f := strings.Split(s, ":")
	if len(f) != 2 {
		return 0, 0, fmt.Errorf("unrecognized time value %q: want hh:mm", s)
	}
	h, err1 := strconv.ParseUint(strings.TrimPrefix(f[0], "+"), 10, 8)
	m, err2 := strconv.ParseUint(strings.TrimPrefix(f[1], "+"), 10, 8)
	if err1 != nil || err2 != nil || f[0] == "" || f[1] == "" {
		return 0, 0, fmt.Errorf("unrecognized time value %q: want hh:mm", s)
	}
	if h > 23 || m > 59 {
		return 0, 0, fmt.Errorf("invalid time %q: hour 0-23, minute 0-59", s)
	}
	return int(h), int(m), nil
}

// Zincati migrates zincati's TOML drop-ins: the update strategy (immediate,
// periodic, fleet_lock), the periodic windows and their zone, the
// FleetLock server and the node's identity.
//
// zincati's windows follow the wall clock (a weekly calendar of local
// minutes); offpeak's open at a wall-clock start and last a real duration.
// They agree except on the days the zone's clocks change, which the notes
// name. zincati also counts the minute that begins at a window's end as
// inside it; offpeak ends the window length_minutes after its start, as
// zincati's documentation describes.
func Zincati(srcs []Source, opts Options) (*Result, error) {
	srcs = zincatiOrder(srcs)
	d := newDoc("zincati", srcs)
	cfg, ignored, err := readZincati(srcs)
	if err != nil {
		return nil, err
	}
	for _, n := range ignored {
		d.noEquivalent(n.Pos, n.Key, "%s", n.Text)
	}
	get := func(k string) (zset, bool) {
		s, ok := cfg.scalars[k]
		return s, ok
	}
	from := func(s zset) string {
		return fmt.Sprintf("from %s: %s = %v", s.pos, s.key, tomlValue(s.value))
	}

	strategy := "immediate"
	strategyWhy := []string{"updates.strategy is not set: zincati's default is \"immediate\""}
	var strategyPos Pos
	if s, ok := get("updates.strategy"); ok {
		strategyPos = s.pos
		if v := s.value.(string); v != "" {
			strategy = v
			strategyWhy = []string{from(s)}
		}
	}
	switch strategy {
	case "immediate", "periodic", "fleet_lock":
	default:
		return nil, errorf(strategyPos, "updates.strategy", "unsupported strategy %q (zincati knows immediate, periodic, fleet_lock)", strategy)
	}
	enabled := true
	if s, ok := get("updates.enabled"); ok {
		enabled = s.value.(bool)
		if !enabled {
			strategyWhy = append(strategyWhy, from(s), "zincati does nothing at all; offpeak \"off\" never reboots (an installer may still stage).")
		}
	}

	loc, zone, err := opts.zone()
	if err != nil {
		return nil, err
	}
	zoneWhy := "updates.periodic.time_zone is not set: zincati's default is UTC."
	if s, ok := get("updates.periodic.time_zone"); ok {
		name := s.value.(string)
		switch {
		case name == "localtime":
			zoneWhy = fmt.Sprintf("%s; zincati read /etc/localtime, here it is %s (offpeak migrate --timezone).", from(s), zone)
			d.note(s.pos, s.key, "zincati read the host's zone from /etc/localtime (UTC when absent); this policy uses %s (set with --timezone).", zone)
		default:
			l, err := time.LoadLocation(name)
			if err != nil || name == "" || strings.EqualFold(name, "Local") {
				return nil, errorf(s.pos, s.key, "unknown time zone %q (an IANA name, or \"localtime\")", name)
			}
			loc, zone, zoneWhy = l, name, from(s)
		}
	} else {
		loc, zone = time.UTC, "UTC"
	}

	var ws []window
	for i, zw := range cfg.windows {
		for _, n := range zw.spell {
			d.note(n.Pos, n.Key, "%s", n.Text)
		}
		ws = append(ws, window{
			name: fmt.Sprintf("zincati-%d", i+1), days: zw.days, hour: zw.hour, minute: zw.minute, length: zw.length, zone: zone,
			why: []string{fmt.Sprintf("from %s: [[updates.periodic.window]] days = %s, start_time = \"%02d:%02d\", length_minutes = %d",
				zw.pos, cronDays(zw.days), zw.hour, zw.minute, int(zw.length/time.Minute)), zoneWhy},
		})
	}

	offpeak, locker := "reboot", ""
	switch {
	case !enabled:
		offpeak = "off"
	case strategy == "periodic":
		if len(ws) == 0 {
			return nil, errorf(strategyPos, "updates.periodic.window", "strategy periodic needs at least one [[updates.periodic.window]] (zincati refuses an empty calendar)")
		}
		offpeak, locker = "window", "file"
	case strategy == "fleet_lock":
		offpeak, locker = "etcd-lock", "fleetlock"
	}
	switch strategy {
	case "immediate":
		strategyWhy = append(strategyWhy, "zincati finalizes (reboots) as soon as an update is staged: offpeak \"reboot\".")
	case "fleet_lock":
		strategyWhy = append(strategyWhy, "reboot once the FleetLock server grants a slot, at any time: offpeak \"etcd-lock\" with the fleetlock locker.")
	}
	d.set("", "strategy", tomlString(offpeak), strategyWhy...)
	if offpeak != "window" {
		d.set("", "window", "[]", fmt.Sprintf("No windows: strategy %s reboots at any time, so `offpeak next` lists none.", offpeak))
		if len(cfg.windows) > 0 {
			d.note(cfg.windows[0].pos, "updates.periodic.window", "the periodic windows are not migrated: zincati ignores them unless strategy is periodic. offpeak can combine windows with a lock: strategy = \"window\" with [[window]] entries and the fleetlock locker.")
		}
	}
	d.set("installer", "backend", tomlString("rpm-ostree"), "zincati finalizes staged rpm-ostree deployments; so does offpeak's rpm-ostree backend.")
	d.note(Pos{}, "", "zincati fetched updates (Cincinnati) as well as rebooting into them; offpeak only reboots into a deployment that is already staged. Let rpm-ostree stage updates (AutomaticUpdatePolicy=stage in /etc/rpm-ostreed.conf, rpm-ostreed-automatic.timer) and stop zincati (systemctl disable --now zincati.service), or both reboot the node.")

	group, hasGroup := get("identity.group")
	uuid, hasUUID := get("identity.node_uuid")
	switch locker {
	case "fleetlock":
		s, ok := get("updates.fleet_lock.base_url")
		if !ok || s.value.(string) == "" {
			p := strategyPos
			if ok {
				p = s.pos
			}
			return nil, errorf(p, "updates.fleet_lock.base_url", "strategy fleet_lock needs a non-empty base_url")
		}
		url := s.value.(string)
		groupName := "default"
		if hasGroup && group.value.(string) != "" {
			groupName = group.value.(string)
		}
		why := []string{from(s)}
		if strings.Contains(url, "${") {
			url = strings.ReplaceAll(url, "${group}", groupName)
			why = append(why, "with ${group} filled in, as zincati does.")
			if strings.Contains(url, "${") {
				d.noEquivalent(s.pos, s.key, "offpeak does not fill in ${basearch}, ${platform} or ${stream}: replace them in [lock.config] url with this host's values")
			}
		}
		d.set("lock", "plugin", tomlString("fleetlock"), "zincati's fleet_lock strategy: the FleetLock protocol, as offpeak's fleetlock locker speaks it.")
		d.set("lock.config", "url", tomlString(url), why...)
		if hasGroup {
			if !groupRe.MatchString(groupName) {
				return nil, errorf(group.pos, group.key, "%q is not a valid offpeak group name (letters, digits, '.', '_', '-'; at most 63)", groupName)
			}
			d.set("node", "group", tomlString(groupName), from(group))
		} else {
			d.set("node", "group", tomlString("default"), "identity.group is not set: zincati's default group.")
		}
		if hasUUID {
			id := uuid.value.(string)
			if strings.TrimSpace(id) == "" || strings.ContainsAny(id, "/\x00\n") {
				return nil, errorf(uuid.pos, uuid.key, "%q is not a usable node id", id)
			}
			d.set("node", "id", tomlString(id), from(uuid), "zincati's FleetLock id; keeping it lets offpeak release a slot zincati took.")
		} else {
			d.note(Pos{}, "", "zincati named this node to the FleetLock server by an id derived from /etc/machine-id (systemd-id128 machine-id --app-specific=%s); offpeak uses /etc/machine-id itself. A slot zincati holds is not offpeak's: switch over while the node holds none, or set [node] id to zincati's id.", zincatiAppID)
		}
	case "file":
		d.set("lock", "plugin", tomlString("file"),
			"zincati's periodic strategy takes no cluster lock; the file locker keeps the slot on this host alone, so nodes do not wait for each other. Use fleetlock (or etcd) to coordinate them.")
	}
	if locker != "fleetlock" {
		if hasGroup {
			d.noEquivalent(group.pos, group.key, "without fleet_lock it is only the Cincinnati update group; offpeak does not fetch updates")
		}
		if hasUUID {
			d.noEquivalent(uuid.pos, uuid.key, "without fleet_lock it only identifies the node to Cincinnati; offpeak does not fetch updates")
		}
		if s, ok := get("updates.fleet_lock.base_url"); ok {
			d.noEquivalent(s.pos, s.key, "unused: zincati talks to the FleetLock server only with strategy fleet_lock")
		}
	}
	if offpeak == "window" {
		d.addWindows(ws)
		d.wallClockNote(ws, loc, zone, opts.now())
		d.note(Pos{}, "", "zincati also allows the minute that begins at a window's end (14:30 + 120 minutes still allows 16:30:59); offpeak's window ends at 16:30, as zincati's documentation describes.")
	}
	if s, ok := get("updates.periodic.time_zone"); ok && offpeak != "window" {
		d.noEquivalent(s.pos, s.key, "unused: zincati reads it only with strategy periodic")
	}
	for _, k := range []struct{ key, why string }{
		{"updates.allow_downgrade", "offpeak does not choose update targets"},
		{"cincinnati.base_url", "offpeak does not fetch updates from Cincinnati"},
		{"identity.rollout_wariness", "offpeak does not fetch updates from Cincinnati"},
		{"agent.timing.steady_interval_secs", "zincati's update check period; offpeak does not fetch updates ([agent] interval is how often it looks whether one is staged)"},
	} {
		if s, ok := get(k.key); ok {
			d.noEquivalent(s.pos, s.key, "%s", k.why)
		}
	}
	return d.result(), nil
}

// tomlValue shows a decoded TOML value in a comment.
func tomlValue(v any) string {
	switch t := v.(type) {
	case string:
		return quoteValue(t)
	default:
		return fmt.Sprint(t)
	}
}
