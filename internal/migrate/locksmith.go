package migrate

import (
	"fmt"
	"regexp"
	"strings"
	"time"
)

// locksmith's defaults, from its source.
var locksmithDefaultEndpoints = []string{"http://127.0.0.1:2379", "http://127.0.0.1:4001"}

// groupRe is offpeak's rule for group names.
var groupRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// updateEngineKeys are update.conf settings update_engine itself reads; they
// stay in effect when offpeak drives update_engine.
var updateEngineKeys = map[string]string{
	"GROUP":             "the update channel",
	"SERVER":            "the Omaha update server",
	"PCR_POLICY_SERVER": "the PCR policy server",
	"MACHINE_ALIAS":     "the machine's name on the update server",
	"DOWNLOAD_USER":     "the update download user",
	"DOWNLOAD_PASSWORD": "the update download password",
}

func secretEnv(key string) bool { return strings.HasSuffix(key, "PASSWORD") }

// Locksmith migrates locksmithd's environment files (update.conf): the
// reboot strategy, the reboot window and the etcd lock settings.
//
// locksmith reads its window in the host's local zone; the policy names
// opts.Timezone (UTC by default) instead, and says so. Its window opens at
// Go's time.Date of the start on that day and lasts the length in elapsed
// time — like offpeak's, except when the start falls in an hour the clocks
// skip or repeat, which the notes spell out for the zone's next changes.
func Locksmith(srcs []Source, opts Options) (*Result, error) {
	loc, zone, err := opts.zone()
	if err != nil {
		return nil, err
	}
	d := newDoc("locksmith", srcs)
	vars := map[string]envVar{}
	var order []string
	for _, src := range srcs {
		for _, v := range parseEnvFile(src, func(n Note) { d.noEquivalent(n.Pos, n.Key, "%s", n.Text) }) {
			if _, seen := vars[v.key]; !seen {
				order = append(order, v.key)
			}
			vars[v.key] = v // a later file (or line) wins, as systemd applies them in order
		}
	}
	used := map[string]bool{}
	// get returns a setting as locksmith reads it: unset and empty are the same.
	get := func(keys ...string) (envVar, bool) {
		for _, k := range keys {
			used[k] = true
		}
		for _, k := range keys {
			if v, ok := vars[k]; ok && v.value != "" {
				return v, true
			}
		}
		return envVar{}, false
	}
	src := func(v envVar) string {
		return fmt.Sprintf("%s: %s", v.pos, redact(v.key, quoteValue(v.value), secretEnv(v.key)))
	}

	strategy, hasStrategy := get("REBOOT_STRATEGY")
	start, hasStart := get("LOCKSMITHD_REBOOT_WINDOW_START", "REBOOT_WINDOW_START")
	length, hasLength := get("LOCKSMITHD_REBOOT_WINDOW_LENGTH", "REBOOT_WINDOW_LENGTH")
	if hasStart != hasLength {
		v := start
		if hasLength {
			v = length
		}
		return nil, errorf(v.pos, v.key, "locksmith needs both LOCKSMITHD_REBOOT_WINDOW_START and LOCKSMITHD_REBOOT_WINDOW_LENGTH, or neither")
	}
	var win *window
	if hasStart {
		w, err := locksmithWindow(start, length)
		if err != nil {
			return nil, err
		}
		w.zone = zone
		w.why = []string{
			"from " + src(start),
			"and  " + src(length),
			fmt.Sprintf("locksmith read this in the host's local time; here it is %s (offpeak migrate --timezone).", zone),
		}
		win = &w
	}

	name := "reboot" // locksmithd's default when REBOOT_STRATEGY is unset
	strategyWhy := "REBOOT_STRATEGY is not set: locksmithd then uses \"reboot\""
	if hasStrategy {
		name = strategy.value
		strategyWhy = "from " + src(strategy)
	}
	var offpeakStrategy, locker string
	switch name {
	case "off":
		offpeakStrategy = "off"
	case "reboot":
		offpeakStrategy, locker = "reboot", ""
		if win != nil {
			offpeakStrategy, locker = "window", "file"
		}
	case "etcd-lock":
		offpeakStrategy, locker = "etcd-lock", "etcd"
		if win != nil {
			offpeakStrategy = "window"
		}
	case "best-effort":
		offpeakStrategy, locker = "best-effort", "etcd"
		if win != nil {
			offpeakStrategy = "window"
			d.note(strategy.pos, strategy.key, "best-effort with a reboot window becomes offpeak's \"window\" strategy, which never reboots without an etcd slot; locksmith rebooted without one when etcd was not running.")
		}
	default:
		return nil, errorf(strategy.pos, strategy.key, "unknown strategy %q: locksmithd knows etcd-lock, reboot, off (and best-effort in older releases)", strategy.value)
	}
	why := []string{strategyWhy}
	switch {
	case name == "off":
		why = append(why, "locksmithd exits and never reboots; offpeak \"off\" stages updates and never reboots.")
	case win != nil:
		why = append(why, "with a reboot window, which only offpeak's \"window\" strategy honours.")
	}
	d.set("", "strategy", tomlString(offpeakStrategy), why...)
	switch {
	case win == nil:
		d.set("", "window", "[]", "No reboot window: locksmith reboots at any time, so `offpeak next` lists no windows.")
	case name == "off":
		d.set("", "window", "[]", "The reboot window is unused: locksmithd exits with strategy off.")
		d.note(start.pos, start.key, "the reboot window is not migrated: strategy off never reboots.")
		win = nil
	}

	d.set("installer", "backend", tomlString("update-engine"),
		"locksmith reboots once update_engine reports UPDATE_STATUS_UPDATED_NEED_REBOOT; offpeak's update-engine backend asks update_engine the same.")
	if name != "off" {
		d.note(Pos{}, "", "Stop locksmithd on this node before starting offpeak (systemctl mask --now locksmithd.service); otherwise both reboot it.")
	}

	group, hasGroup := get("LOCKSMITHD_GROUP")
	if hasGroup && !groupRe.MatchString(group.value) {
		return nil, errorf(group.pos, group.key, "%q is not a valid offpeak group name (letters, digits, '.', '_', '-'; at most 63); rename the group", group.value)
	}
	switch {
	case hasGroup && locker != "":
		d.set("node", "group", tomlString(group.value), "from "+src(group))
	case hasGroup:
		d.noEquivalent(group.pos, group.key, "unused: strategy %s takes no lock", name)
	case locker != "":
		d.set("node", "group", tomlString("default"), "LOCKSMITHD_GROUP is not set: locksmith's default group \"\" is offpeak's \"default\".")
	}

	etcdKeys := []struct{ env, key string }{
		{"LOCKSMITHD_ETCD_CAFILE", "ca_file"},
		{"LOCKSMITHD_ETCD_CERTFILE", "cert_file"},
		{"LOCKSMITHD_ETCD_KEYFILE", "key_file"},
		{"LOCKSMITHD_ETCD_USERNAME", "username"},
		{"LOCKSMITHD_ETCD_PASSWORD", "password"},
	}
	endpoints, hasEndpoints := get("LOCKSMITHD_ENDPOINT")
	switch locker {
	case "etcd":
		d.set("lock", "plugin", tomlString("etcd"), "locksmith's lock lives in etcd.")
		d.set("lock", "slots", tomlInt(1),
			"locksmith keeps its slot count in etcd (locksmithctl status shows Max; default 1). Set the same here, or later with `offpeak locks set-max N`.")
		eps := locksmithDefaultEndpoints
		epWhy := "LOCKSMITHD_ENDPOINT is not set: locksmith's defaults."
		if hasEndpoints {
			eps = nil
			for _, e := range strings.Split(endpoints.value, ",") {
				if e = strings.TrimSpace(e); e != "" {
					eps = append(eps, e)
				}
			}
			if len(eps) == 0 {
				return nil, errorf(endpoints.pos, endpoints.key, "names no endpoint")
			}
			epWhy = "from " + src(endpoints)
		}
		d.set("lock.config", "endpoints", tomlStrings(eps), epWhy)
		for _, k := range etcdKeys {
			if v, ok := get(k.env); ok {
				d.set("lock.config", k.key, tomlString(v.value), "from "+src(v))
				if secretEnv(k.env) {
					d.note(v.pos, v.key, "the etcd password is now in the policy: keep the file readable by root only (chmod 0600).")
				}
			}
		}
		d.note(Pos{}, "", "locksmith keeps its lock in etcd's v2 API (coreos.com/updateengine/rebootlock/…). offpeak uses etcd v3 and airlock's key com.coreos.airlock/groups/<group>/v1/semaphore, so neither sees the other's holders. Switch a group over as a whole: check that no node holds locksmith's lock (locksmithctl status; locksmithctl unlock ID), stop locksmithd on every node of the group, then start offpeak. etcd must serve its v3 API on these endpoints (etcd 3.4 and later do).")
	case "file":
		d.set("lock", "plugin", tomlString("file"),
			"locksmith's \"reboot\" strategy takes no cluster lock; the file locker keeps the slot on this host alone, so nodes do not wait for each other. Use etcd (or fleetlock) to coordinate them.")
	default:
		if hasEndpoints {
			d.noEquivalent(endpoints.pos, endpoints.key, "unused: strategy %s takes no lock", name)
		}
		for _, k := range etcdKeys {
			if v, ok := get(k.env); ok {
				d.noEquivalent(v.pos, v.key, "unused: strategy %s takes no lock", name)
			}
		}
	}

	if win != nil {
		d.addWindows([]window{*win})
		d.note(Pos{}, "", "locksmith read its reboot window in the host's local time zone; this policy uses %s (set with --timezone; Flatcar's default zone is UTC).", zone)
		d.locksmithClockNotes(*win, loc, zone, opts.now())
		if name != "reboot" {
			d.note(Pos{}, "", "locksmith checked its window before asking for the lock, and after a failed attempt; offpeak also checks it after taking the slot and right before rebooting, and gives the slot back when the window has closed.")
		}
	}

	for _, k := range order {
		if used[k] {
			continue
		}
		v := vars[k]
		switch {
		case updateEngineKeys[k] != "":
			d.note(v.pos, k, "%s stays update_engine's own setting; update_engine keeps reading update.conf.", updateEngineKeys[k])
		case k == "LOCKSMITHD_DEBUG":
			d.noEquivalent(v.pos, k, "use `offpeak agent --log-level debug`")
		default:
			d.noEquivalent(v.pos, k, "not a locksmith setting")
		}
	}
	return d.result(), nil
}

var weekdayShort = map[string]time.Weekday{
	"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday,
	"thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday,
}

// locksmithWindow parses the window as locksmith does: "[Day] H:M" with a
// short day name in any case, and a Go duration shorter than the period.
func locksmithWindow(start, length envVar) (window, error) {
	w := window{name: "locksmith"}
	f := strings.Fields(start.value)
	switch len(f) {
	case 1:
	case 2:
		day, ok := weekdayShort[strings.ToLower(f[0])]
		if !ok {
			return w, errorf(start.pos, start.key, "invalid day of week %q (locksmith knows Sun, Mon, Tue, Wed, Thu, Fri, Sat)", f[0])
		}
		w.days = map[time.Weekday]bool{day: true}
		f = f[1:]
	default:
		return w, errorf(start.pos, start.key, "%q: want \"HH:MM\" or \"Day HH:MM\"", start.value)
	}
	// locksmith reads the time with fmt.Sscanf("%d:%d"), so this accepts
	// exactly what it accepts.
	if n, err := fmt.Sscanf(f[0], "%d:%d", &w.hour, &w.minute); n != 2 || err != nil {
		return w, errorf(start.pos, start.key, "invalid time of day %q: want HH:MM", f[0])
	}
	if w.hour < 0 || w.hour > 23 || w.minute < 0 || w.minute > 59 {
		return w, errorf(start.pos, start.key, "invalid time of day %q: hour 0-23, minute 0-59", f[0])
	}
	l, err := time.ParseDuration(length.value)
	switch {
	case err != nil:
		return w, errorf(length.pos, length.key, "%q is not a duration such as \"1h30m\"", length.value)
	case l < 0:
		return w, errorf(length.pos, length.key, "the length cannot be negative")
	case w.days == nil && l >= 24*time.Hour:
		return w, errorf(length.pos, length.key, "%s: a daily window must be shorter than 24h", length.value)
	case l >= 7*24*time.Hour:
		return w, errorf(length.pos, length.key, "%s: a weekly window must be shorter than 7 days", length.value)
	case l == 0:
		// locksmith then reboots right at the start; offpeak needs a
		// window longer than zero.
		l = time.Minute
	}
	w.length = l
	return w, nil
}

// locksmithClockNotes compares, for the zone's next clock changes, where
// locksmith and offpeak open the window when its start falls in the hour
// that is skipped or repeated. locksmith opens at Go's time.Date of the
// start: Go resolves a skipped or repeated time with the offset of the UTC
// instant its wall clock names, which for zones west of UTC lands an hour
// early in a gap and for zones east of it on the second occurrence.
func (d *doc) locksmithClockNotes(w window, loc *time.Location, zone string, now time.Time) {
	for _, c := range clockChanges(loc, now, 2) {
		day := c.lo
		if w.days != nil && !w.days[day.Weekday()] {
			continue
		}
		wall := time.Date(day.Year(), day.Month(), day.Day(), w.hour, w.minute, 0, 0, time.UTC)
		if wall.Before(c.lo) || !wall.Before(c.hi) {
			continue
		}
		theirs := time.Date(day.Year(), day.Month(), day.Day(), w.hour, w.minute, 0, 0, loc)
		ours := c.at.In(loc) // right after the gap
		if !c.gap {
			ours = wall.Add(-time.Duration(c.before) * time.Second).In(loc) // the first occurrence
		}
		if theirs.Equal(ours) {
			continue
		}
		const f = "15:04 MST"
		d.note(Pos{}, "", "Clock change: %s, and the window starts at %02d:%02d. locksmith would open it at %s, offpeak opens it at %s (%s), in both cases for %s of real time.",
			c.describe(zone), w.hour, w.minute, theirs.Format(f), ours.Format(f),
			map[bool]string{true: "right after the gap", false: "the first occurrence"}[c.gap], fmtDuration(w.length))
	}
}
