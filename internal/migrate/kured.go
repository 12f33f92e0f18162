package migrate

import (
	"fmt"
	"path"
	"regexp"
	"regexp/syntax"
	"slices"
	"strconv"
	"strings"
	"time"
)

// kuredFlag describes one of kured's command-line flags.
type kuredFlag struct {
	kind string // bool, string, int, duration, slice (comma list, repeatable), array (repeatable), regexp
	def  string
	// why a flag has no equivalent; empty for flags the migration maps.
	none string
}

const kubeOnly = "Kubernetes-specific; offpeak does not drive Kubernetes (an exec pre-reboot check can run kubectl)"

// kuredFlags lists kured's flags (cmd/kured/main.go) with their defaults.
var kuredFlags = map[string]kuredFlag{
	"alert-filter-match-only":      {kind: "bool", def: "false"},
	"alert-filter-regexp":          {kind: "regexp"},
	"alert-firing-only":            {kind: "bool", def: "false"},
	"annotate-nodes":               {kind: "bool", def: "false", none: kubeOnly},
	"blocking-pod-selector":        {kind: "array", none: kubeOnly},
	"concurrency":                  {kind: "int", def: "1"},
	"drain-delay":                  {kind: "duration", def: "0s", none: kubeOnly},
	"drain-grace-period":           {kind: "int", def: "-1", none: kubeOnly},
	"drain-pod-selector":           {kind: "string", none: kubeOnly},
	"drain-timeout":                {kind: "duration", def: "0s", none: kubeOnly},
	"ds-name":                      {kind: "string", def: "kured", none: "kured's lock is an annotation on its DaemonSet; offpeak keeps its slots in [lock]"},
	"ds-namespace":                 {kind: "string", def: "kube-system", none: "kured's lock is an annotation on its DaemonSet; offpeak keeps its slots in [lock]"},
	"end-time":                     {kind: "string", def: "23:59:59"},
	"force-reboot":                 {kind: "bool", def: "false", none: kubeOnly},
	"lock-annotation":              {kind: "string", def: "weave.works/kured-node-lock", none: "kured's lock is an annotation on its DaemonSet; offpeak keeps its slots in [lock]"},
	"lock-release-delay":           {kind: "duration", def: "0s", none: "offpeak releases a slot once the node's post-boot checks pass; use a post-boot check to hold it longer"},
	"lock-ttl":                     {kind: "duration", def: "0s"},
	"log-format":                   {kind: "string", def: "text", none: "offpeak logs to the journal with structured fields"},
	"message-template-drain":       {kind: "string", def: "Draining node %s", none: "offpeak does not drain nodes"},
	"message-template-reboot":      {kind: "string", def: "Rebooting node %s", none: "offpeak's [notify] webhook posts JSON with the node and reason"},
	"message-template-uncordon":    {kind: "string", def: "Node %s rebooted & uncordoned successfully!", none: "offpeak does not cordon nodes"},
	"metrics-host":                 {kind: "string", none: "not a policy setting: run `offpeak agent --metrics-listen HOST:PORT`"},
	"metrics-port":                 {kind: "int", def: "8080", none: "not a policy setting: run `offpeak agent --metrics-listen HOST:PORT`"},
	"node-id":                      {kind: "string", none: "offpeak names the node by /etc/machine-id, or [node] id"},
	"notify-url":                   {kind: "string", none: "shoutrrr URLs have no equivalent; offpeak's [notify] webhook posts JSON to an http(s) URL"},
	"period":                       {kind: "duration", def: "1h0m0s"},
	"post-reboot-node-labels":      {kind: "slice", none: kubeOnly},
	"pre-reboot-node-labels":       {kind: "slice", none: kubeOnly},
	"prefer-no-schedule-taint":     {kind: "string", none: kubeOnly},
	"prometheus-url":               {kind: "string"},
	"reboot-command":               {kind: "string", def: "/bin/systemctl reboot"},
	"reboot-days":                  {kind: "slice", def: "su,mo,tu,we,th,fr,sa"},
	"reboot-delay":                 {kind: "duration", def: "0s"},
	"reboot-method":                {kind: "string", def: "command"},
	"reboot-sentinel":              {kind: "string", def: "/var/run/reboot-required"},
	"reboot-sentinel-command":      {kind: "string"},
	"reboot-signal":                {kind: "int", def: "39"},
	"skip-wait-for-delete-timeout": {kind: "int", def: "0", none: kubeOnly},
	"slack-channel":                {kind: "string", none: "offpeak's [notify] webhook posts JSON to an http(s) URL"},
	"slack-hook-url":               {kind: "string", none: "offpeak's [notify] webhook posts JSON to an http(s) URL"},
	"slack-username":               {kind: "string", def: "kured", none: "offpeak's [notify] webhook posts JSON to an http(s) URL"},
	"start-time":                   {kind: "string", def: "0:00"},
	"time-zone":                    {kind: "string", def: "UTC"},
}

// kuredArg is one flag as given, with where.
type kuredArg struct {
	name, value string
	pos         Pos
	env         bool // from a KURED_* environment variable
	// For --reboot-sentinel read from a manifest: the path on the host,
	// through a hostPath mount at mountLine; implied when the manifest
	// relies on kured's default path.
	hostPath  string
	mountLine int
	implied   bool
}

// kuredSetting is a flag's effective value: its default, or the last value
// given (slices and arrays collect every value given).
type kuredSetting struct {
	values []string
	args   []kuredArg
}

func (s kuredSetting) set() bool { return len(s.args) > 0 }

func (s kuredSetting) last() string {
	if len(s.values) == 0 {
		return ""
	}
	return s.values[len(s.values)-1]
}

func (s kuredSetting) from() string {
	var parts []string
	for _, a := range s.args {
		if a.env {
			parts = append(parts, fmt.Sprintf("%s: KURED_%s=%s", a.pos, strings.ToUpper(strings.ReplaceAll(a.name, "-", "_")), quoteValue(a.value)))
		} else {
			parts = append(parts, fmt.Sprintf("%s: --%s=%s", a.pos, a.name, quoteValue(a.value)))
		}
	}
	return "from " + strings.Join(parts, ", ")
}

// kuredSettings applies the arguments as kured does: command-line flags
// first, then KURED_* environment variables, which override them.
func kuredSettings(args []kuredArg) (map[string]kuredSetting, error) {
	out := map[string]kuredSetting{}
	for _, a := range args {
		if !a.env {
			if err := applyKured(out, a); err != nil {
				return nil, err
			}
		}
	}
	for _, a := range args {
		if a.env {
			if _, ok := out[a.name]; ok {
				// kured sets an environment value over the flag's; for a
				// slice that replaces what the flags gave.
				delete(out, a.name)
			}
			if err := applyKured(out, a); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

func applyKured(out map[string]kuredSetting, a kuredArg) error {
	f := kuredFlags[a.name]
	key := "--" + a.name
	if a.env {
		key = "KURED_" + strings.ToUpper(strings.ReplaceAll(a.name, "-", "_"))
	}
	switch f.kind {
	case "bool":
		if _, err := strconv.ParseBool(a.value); err != nil {
			return errorf(a.pos, key, "%q is not true or false", a.value)
		}
	case "int":
		if _, err := strconv.ParseInt(a.value, 0, 64); err != nil {
			return errorf(a.pos, key, "%q is not a whole number", a.value)
		}
	case "duration":
		if _, err := time.ParseDuration(a.value); err != nil {
			return errorf(a.pos, key, "%q is not a duration such as \"90s\" or \"1h\"", a.value)
		}
	case "regexp":
		if _, err := regexp.Compile(a.value); err != nil {
			return errorf(a.pos, key, "not a regular expression: %v", err)
		}
	}
	s := out[a.name]
	switch f.kind {
	case "slice":
		for _, v := range strings.Split(a.value, ",") {
			s.values = append(s.values, strings.TrimSpace(v))
		}
	case "array":
		s.values = append(s.values, a.value)
	default:
		s.values = []string{a.value}
	}
	s.args = append(s.args, a)
	out[a.name] = s
	return nil
}

// kuredArgs reads one source: a DaemonSet manifest (YAML with "kind:"), or
// a flags file.
func kuredArgs(src Source) ([]kuredArg, []Note, error) {
	if looksLikeManifest(src.Data) {
		return kuredManifest(src)
	}
	args, err := kuredFlagsFile(src)
	return args, nil, err
}

// kuredFlagsFile reads kured's arguments written as on a command line,
// any number per line: --flag=value, --flag value, --bool; words are split
// at blanks, with '…' and "…" quoting; # starts a comment; a leading
// kured program path is skipped. KURED_FLAG=value lines are environment
// variables, as kured reads them.
func kuredFlagsFile(src Source) ([]kuredArg, error) {
	var out []kuredArg
	lines := strings.Split(strings.ReplaceAll(string(src.Data), "\r\n", "\n"), "\n")
	for i, line := range lines {
		pos := Pos{src.Name, i + 1}
		words, err := shellWords(line)
		if err != nil {
			return nil, errorf(pos, "", "%v", err)
		}
		if len(words) > 0 && strings.HasPrefix(words[0], "KURED_") && strings.Contains(words[0], "=") {
			k, v, _ := strings.Cut(words[0], "=")
			a, err := kuredEnv(k, v, pos)
			if err != nil {
				return nil, err
			}
			if len(words) > 1 {
				return nil, errorf(pos, k, "one KURED_ variable per line")
			}
			out = append(out, a)
			continue
		}
		if len(words) > 0 && path.Base(words[0]) == "kured" {
			words = words[1:]
		}
		as, err := parseKuredWords(words, func(int) Pos { return pos })
		if err != nil {
			return nil, err
		}
		out = append(out, as...)
	}
	return out, nil
}

func kuredEnv(key, value string, pos Pos) (kuredArg, error) {
	name := strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(key, "KURED_"), "_", "-"))
	if _, ok := kuredFlags[name]; !ok {
		return kuredArg{}, errorf(pos, key, "no kured flag --%s", name)
	}
	return kuredArg{name: name, value: value, pos: pos, env: true}, nil
}

// parseKuredWords parses arguments as kured's flag library (pflag) does.
func parseKuredWords(words []string, posOf func(int) Pos) ([]kuredArg, error) {
	var out []kuredArg
	for i := 0; i < len(words); i++ {
		w := words[i]
		pos := posOf(i)
		if w == "--" {
			return nil, errorf(pos, w, "kured takes no positional arguments")
		}
		if !strings.HasPrefix(w, "--") {
			return nil, errorf(pos, w, "not a kured flag (kured's flags are --name=value)")
		}
		name, value, hasValue := strings.Cut(w[2:], "=")
		f, ok := kuredFlags[name]
		if !ok {
			return nil, errorf(pos, "--"+name, "unknown kured flag%s", suggestFlag(name))
		}
		if !hasValue {
			if f.kind == "bool" {
				value = "true"
			} else {
				if i+1 >= len(words) {
					return nil, errorf(pos, "--"+name, "needs a value")
				}
				i++
				value = words[i]
			}
		}
		out = append(out, kuredArg{name: name, value: value, pos: pos})
	}
	return out, nil
}

func suggestFlag(name string) string {
	best, bestD := "", 4
	for f := range kuredFlags {
		if d := editDistance(name, f); d < bestD || (d == bestD && f < best) {
			best, bestD = f, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf("; did you mean --%s?", best)
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// shellWords splits a line at blanks, honouring '…' and "…" (with \" and
// \\ inside double quotes) and a # that starts a word as a comment.
func shellWords(line string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == ' ' || c == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case c == '#' && !inWord:
			return words, nil
		case c == '\'':
			j := strings.IndexByte(line[i+1:], '\'')
			if j < 0 {
				return nil, fmt.Errorf("unterminated ' quote")
			}
			cur.WriteString(line[i+1 : i+1+j])
			i += j + 1
			inWord = true
		case c == '"':
			i++
			for ; i < len(line) && line[i] != '"'; i++ {
				if line[i] == '\\' && i+1 < len(line) && (line[i+1] == '"' || line[i+1] == '\\') {
					i++
				}
				cur.WriteByte(line[i])
			}
			if i >= len(line) {
				return nil, fmt.Errorf("unterminated \" quote")
			}
			inWord = true
		case c == '\\' && i+1 < len(line):
			i++
			cur.WriteByte(line[i])
			inWord = true
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

// kuredDays parses --reboot-days as kured does: day names (su, sun, sunday
// …) in any case, or numbers 0-6 (0 is Sunday); empty entries are skipped.
func kuredDays(values []string) (map[time.Weekday]bool, error) {
	names := map[string]time.Weekday{}
	for d := time.Sunday; d <= time.Saturday; d++ {
		full := strings.ToLower(d.String())
		names[full], names[full[:3]], names[full[:2]] = d, d, d
	}
	days := map[time.Weekday]bool{}
	for _, v := range values {
		if v == "" {
			continue
		}
		if n, err := strconv.Atoi(v); err == nil {
			if n < 0 || n > 6 {
				return nil, fmt.Errorf("invalid weekday, number out of range: %s", v)
			}
			days[time.Weekday(n)] = true
			continue
		}
		d, ok := names[strings.ToLower(v)]
		if !ok {
			return nil, fmt.Errorf("invalid weekday: %s", v)
		}
		days[d] = true
	}
	return days, nil
}

// kuredTime parses a time of day with kured's formats.
func kuredTime(s string) (time.Duration, error) {
	for _, f := range []string{"15:04", "15:04:05", "03:04pm", "15", "03pm", "3pm"} {
		if t, err := time.Parse(f, s); err == nil {
			return time.Duration(t.Hour())*time.Hour + time.Duration(t.Minute())*time.Minute + time.Duration(t.Second())*time.Second, nil
		}
	}
	return 0, fmt.Errorf("invalid time format: %s", s)
}

// kuredWindows turns kured's window into offpeak windows. kured allows a
// reboot at t when t's weekday (in the zone) is listed and t's wall clock
// lies in [start, end] of that same day, end counted to the end of its
// second. When start is after end the listed day's window is its early
// part [00:00, end] and its late part [start, 24:00), so a reboot day
// followed by another listed day gives one window from start to the next
// day's end, and the edges of a run of days get the two parts alone.
func kuredWindows(days map[time.Weekday]bool, start, end time.Duration) (ws []window, notes []string) {
	// offpeak starts windows on whole minutes: round a start up and an end
	// down, so no reboot is allowed that kured would refuse.
	if r := start % time.Minute; r != 0 {
		start += time.Minute - r
		notes = append(notes, "kured's --start-time has seconds; the window starts at the next whole minute")
	}
	endEx := end + time.Second // kured's end second is inside the window
	if r := endEx % time.Minute; r != 0 {
		endEx -= r
		if end%time.Minute != 0 {
			notes = append(notes, "kured's --end-time has seconds; the window ends at the whole minute before it")
		} else {
			notes = append(notes, fmt.Sprintf("kured still allows the second %s (its --end-time) itself; offpeak's window ends at %s (half-open)", clock(end), clock(end)))
		}
	}
	at := func(name string, days map[time.Weekday]bool, from, length time.Duration) {
		if len(days) == 0 || length <= 0 {
			return
		}
		ws = append(ws, window{name: name, days: days, hour: int(from / time.Hour), minute: int(from % time.Hour / time.Minute), length: length})
	}
	const day = 24 * time.Hour
	if start <= end {
		if endEx <= start {
			notes = append(notes, "kured's window is a single second; offpeak cannot open a window that short")
			return nil, notes
		}
		at("kured", days, start, endEx-start)
		return ws, notes
	}
	run, lastOfRun, firstOfRun := map[time.Weekday]bool{}, map[time.Weekday]bool{}, map[time.Weekday]bool{}
	for d := range days {
		next, prev := (d+1)%7, (d+6)%7
		if days[next] {
			run[d] = true
		} else {
			lastOfRun[d] = true
		}
		if !days[prev] {
			firstOfRun[d] = true
		}
	}
	at("kured", run, start, day-start+endEx)
	at("kured-evening", lastOfRun, start, day-start)
	at("kured-morning", firstOfRun, 0, endEx)
	return ws, notes
}

func clock(d time.Duration) string {
	return fmt.Sprintf("%02d:%02d:%02d", int(d/time.Hour), int(d%time.Hour/time.Minute), int(d%time.Minute/time.Second))
}

// alertNames returns the names an alert filter matches when it is nothing
// but an anchored list of literal names (^(A|B)$), so it can become the
// prometheus check's ignore list.
func alertNames(expr string) ([]string, bool) {
	if !strings.HasPrefix(expr, "^") || !strings.HasSuffix(expr, "$") || strings.HasSuffix(expr, `\$`) {
		return nil, false
	}
	inner := expr[1 : len(expr)-1]
	for _, open := range []string{"(?:", "("} {
		if strings.HasPrefix(inner, open) && strings.HasSuffix(inner, ")") && strings.Count(inner, "(") == 1 {
			inner = inner[len(open) : len(inner)-1]
			break
		}
	}
	var names []string
	for _, part := range strings.Split(inner, "|") {
		re, err := syntax.Parse(part, syntax.Perl)
		if err != nil || re.Op != syntax.OpLiteral || re.Flags&syntax.FoldCase != 0 {
			return nil, false
		}
		names = append(names, string(re.Rune))
	}
	slices.Sort(names)
	return slices.Compact(names), true
}

// kuredPlaceholderEtcd is an endpoint that cannot resolve (RFC 2606): the
// migrated node fails closed until the operator names a real lock service.
const kuredPlaceholderEtcd = "https://etcd.invalid:2379"

// Kured migrates kured's flags — from a flags file or a DaemonSet manifest —
// into a policy: the reboot days and hours with their zone, the lock's
// concurrency and TTL, the Prometheus alert check, the sentinel and the
// reboot delay. Kubernetes-specific flags have no equivalent.
//
// kured's window is read on the wall clock of each instant, like zincati's;
// offpeak's windows last a real duration, so the two part on the days the
// zone's clocks change, which the notes name.
func Kured(srcs []Source, opts Options) (*Result, error) {
	d := newDoc("kured", srcs)
	var args []kuredArg
	for _, src := range srcs {
		as, notes, err := kuredArgs(src)
		if err != nil {
			return nil, err
		}
		for _, n := range notes {
			d.noEquivalent(n.Pos, n.Key, "%s", n.Text)
		}
		args = append(args, as...)
	}
	set, err := kuredSettings(args)
	if err != nil {
		return nil, err
	}
	val := func(name string) string {
		if s, ok := set[name]; ok {
			return s.last()
		}
		return kuredFlags[name].def
	}
	from := func(name, dflt string) string {
		if s, ok := set[name]; ok {
			return s.from()
		}
		return dflt
	}
	errAt := func(name, format string, a ...any) error {
		s := set[name]
		if len(s.args) == 0 {
			return errorf(Pos{}, "--"+name, format, a...)
		}
		last := s.args[len(s.args)-1]
		return errorf(last.pos, "--"+name, format, a...)
	}

	// The window.
	dayValues := strings.Split(kuredFlags["reboot-days"].def, ",")
	if s, ok := set["reboot-days"]; ok {
		dayValues = s.values
	}
	days, err := kuredDays(dayValues)
	if err != nil {
		return nil, errAt("reboot-days", "%v", err)
	}
	start, err := kuredTime(val("start-time"))
	if err != nil {
		return nil, errAt("start-time", "%v", err)
	}
	end, err := kuredTime(val("end-time"))
	if err != nil {
		return nil, errAt("end-time", "%v", err)
	}
	loc, zone, err := opts.zone()
	if err != nil {
		return nil, err
	}
	zoneWhy := from("time-zone", "--time-zone is not set: kured's default is UTC.")
	switch tz := val("time-zone"); {
	case strings.EqualFold(tz, "Local"):
		zoneWhy += fmt.Sprintf(" kured read its container's local zone; here it is %s (offpeak migrate --timezone).", zone)
		d.note(set["time-zone"].args[0].pos, "--time-zone", "kured read the local zone of its container (usually UTC); this policy uses %s (set with --timezone).", zone)
	case tz == "" || tz == "UTC":
		loc, zone = time.UTC, "UTC" // Go's LoadLocation, which kured uses, reads "" as UTC
	default:
		l, err := time.LoadLocation(tz)
		if err != nil {
			return nil, errAt("time-zone", "unknown time zone %q", tz)
		}
		loc, zone = l, tz
	}
	ws, windowNotes := kuredWindows(days, start, end)
	windowWhy := []string{
		from("reboot-days", "--reboot-days is not set: every day."),
		from("start-time", "--start-time is not set: 0:00."),
		from("end-time", "--end-time is not set: 23:59:59."),
		zoneWhy,
	}
	for i := range ws {
		ws[i].zone = zone
		ws[i].why = windowWhy
		if i > 0 {
			ws[i].why = []string{"the same kured window, continued (see above)"}
		}
	}
	for _, n := range windowNotes {
		d.note(Pos{}, "", "%s", n)
	}
	always := len(days) == 7 && start == 0 && end+time.Second >= 24*time.Hour
	strategy := "window"
	switch {
	case len(days) == 0:
		strategy = "off"
		d.set("", "strategy", tomlString(strategy), from("reboot-days", ""), "No reboot day: kured never reboots.")
	case always:
		strategy = "etcd-lock"
		d.set("", "strategy", tomlString(strategy), "kured's window covers every day, all day (its defaults): a slot at any time.")
	case len(ws) == 0:
		return nil, errAt("end-time", "kured's window is a single second; offpeak cannot open a window that short")
	default:
		d.set("", "strategy", tomlString(strategy), "kured reboots inside its window, holding its lock: offpeak \"window\".")
	}
	if strategy != "window" {
		d.set("", "window", "[]", fmt.Sprintf("No windows: strategy %s does not look at them, so `offpeak next` lists none.", strategy))
	}

	// The lock.
	conc, _ := strconv.ParseInt(val("concurrency"), 0, 64) // as kured's flag library reads it
	if conc > 1<<16 {
		return nil, errAt("concurrency", "%d slots: that is no limit at all", conc)
	}
	if conc < 1 {
		return nil, errAt("concurrency", "must be at least 1 (offpeak's slots)")
	}
	d.set("lock", "plugin", tomlString("etcd"),
		"kured's lock is an annotation on its DaemonSet; offpeak has no Kubernetes locker. Point [lock.config] at an etcd v3 cluster (or use plugin = \"fleetlock\" with `offpeak fleetlock serve`).")
	d.set("lock", "slots", tomlInt(int(conc)), from("concurrency", "--concurrency is not set: kured's default is 1."))
	if ttl, _ := time.ParseDuration(val("lock-ttl")); ttl > 0 {
		d.set("lock", "stale_after", tomlString(fmtDuration(ttl)), from("lock-ttl", ""),
			"kured dropped an expired lock by itself; offpeak lets a node reclaim a slot whose holder's deadline passed.")
	}
	d.set("lock.config", "endpoints", tomlStrings([]string{kuredPlaceholderEtcd}),
		"A placeholder that never resolves: until it names your etcd, this node fails closed (no reboot).")
	d.note(Pos{}, "", "Set [lock.config] endpoints (and ca_file, cert_file, key_file) to an etcd v3 cluster the nodes share: kured's lock lived on its DaemonSet, which offpeak does not use. Until then the node never reboots. Run offpeak on every node of the cluster, and stop kured (kubectl -n kube-system delete daemonset kured) once they all do.")

	// What says a reboot is needed.
	if cmd := val("reboot-sentinel-command"); cmd != "" {
		d.noEquivalent(set["reboot-sentinel-command"].args[0].pos, "--reboot-sentinel-command",
			"kured reboots when the command exits 0; offpeak's [[detect]] kind = \"command\" takes exit 0 as \"not needed\". Wrap the command so it exits 1 when a reboot is needed, and add it as [[detect]] argv. Until then offpeak's default sentinels apply.")
	} else {
		s := set["reboot-sentinel"]
		p := val("reboot-sentinel")
		why := from("reboot-sentinel", "--reboot-sentinel is not set: kured's default.")
		if len(s.args) > 0 {
			last := s.args[len(s.args)-1]
			if last.implied {
				why = "--reboot-sentinel is not set: kured's default " + quoteValue(last.value) + "."
			}
			if last.hostPath != "" {
				why += fmt.Sprintf(" kured saw it in its container; on the host it is %s (the hostPath mount at %s:%d).", last.hostPath, last.pos.File, last.mountLine)
				p = last.hostPath
			}
		}
		if !strings.HasPrefix(p, "/") {
			return nil, errAt("reboot-sentinel", "%q: offpeak needs the sentinel's absolute path", p)
		}
		t := d.entry("detect", why)
		t.set("kind", tomlString("file"))
		t.set("path", tomlString(p))
	}

	// Alerts that block a reboot.
	if url := val("prometheus-url"); url != "" {
		t := d.entry("health", from("prometheus-url", ""), "kured blocks a reboot while Prometheus has active alerts; so does offpeak's prometheus check.")
		t.set("name", tomlString("prometheus-alerts"))
		t.set("plugin", tomlString("prometheus"))
		t.set("phase", tomlString("pre-reboot"))
		cfg := d.subtable("health.config")
		cfg.set("url", tomlString(url), from("prometheus-url", ""))
		firing, _ := strconv.ParseBool(val("alert-firing-only"))
		cfg.set("include_pending", tomlBool(!firing), from("alert-firing-only", "--alert-firing-only is not set: kured counts pending alerts too."))
		if re := val("alert-filter-regexp"); re != "" {
			matchOnly, _ := strconv.ParseBool(val("alert-filter-match-only"))
			why := from("alert-filter-regexp", "")
			switch names, literal := alertNames(re); {
			case matchOnly:
				// kured matches anywhere in the name; match_regex is anchored.
				cfg.set("match_regex", fmt.Sprintf("{ alertname = %s }", tomlString(".*(?:"+re+").*")), why, from("alert-filter-match-only", ""),
					"only alerts whose name matches count (kured matches anywhere in the name, hence .*(?:…).*).")
			case literal:
				cfg.set("ignore", tomlStrings(names), why, "alerts with these names never block.")
			default:
				d.noEquivalent(set["alert-filter-regexp"].args[0].pos, "--alert-filter-regexp",
					"offpeak ignores alerts by exact name (ignore = [\"…\"]), not by a regular expression; until you list them, every alert blocks (stricter than kured)")
			}
		}
	} else {
		for _, name := range []string{"alert-filter-regexp", "alert-filter-match-only", "alert-firing-only"} {
			if s, ok := set[name]; ok {
				d.noEquivalent(s.args[0].pos, "--"+name, "unused without --prometheus-url")
			}
		}
	}

	// How and when to reboot.
	if delay, _ := time.ParseDuration(val("reboot-delay")); delay > 0 {
		d.set("reboot", "warn", tomlString(fmtDuration(delay)), from("reboot-delay", ""),
			"kured waited this long before rebooting; offpeak waits as long after telling logged-in users.")
	}
	if s, ok := set["reboot-method"]; ok && val("reboot-method") != "command" {
		d.noEquivalent(s.args[0].pos, "--reboot-method", "offpeak reboots through logind (or systemctl), not by a signal to PID 1")
	}
	if s, ok := set["reboot-signal"]; ok {
		d.noEquivalent(s.args[0].pos, "--reboot-signal", "offpeak reboots through logind (or systemctl), not by a signal to PID 1")
	}
	if s, ok := set["reboot-command"]; ok {
		switch strings.Join(strings.Fields(val("reboot-command")), " ") {
		case "/bin/systemctl reboot", "/usr/bin/systemctl reboot", "systemctl reboot":
			d.set("reboot", "method", tomlString("systemctl"), s.from())
		default:
			d.noEquivalent(s.args[0].pos, "--reboot-command", "offpeak reboots through logind or systemctl, not a command of your choice")
		}
	}
	if s, ok := set["period"]; ok {
		p, _ := time.ParseDuration(s.last())
		if p >= time.Second {
			d.set("agent", "interval", tomlString(fmtDuration(p)), s.from(),
				"kured looked for the sentinel this often; offpeak also wakes at every window edge.")
		} else {
			d.noEquivalent(s.args[0].pos, "--period", "offpeak's [agent] interval is at least 1s")
		}
	}
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for k := range set {
			if !yield(k) {
				return
			}
		}
	}) {
		if why := kuredFlags[name].none; why != "" {
			s := set[name]
			d.noEquivalent(s.args[0].pos, "--"+name, "%s", why)
		}
	}

	if strategy == "window" {
		d.addWindows(ws)
		d.wallClockNote(ws, loc, zone, opts.now())
		if start > end {
			d.note(Pos{}, "", "kured's window runs past midnight, and kured counts each listed day's early hours (until --end-time) and late hours (from --start-time) alone: the night after the last listed day is not included, the early hours of the first are. The windows above say the same.")
		}
	}
	return d.result(), nil
}
