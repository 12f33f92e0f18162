package policyload

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/offpeak/offpeak/internal/cronspec"
	"github.com/offpeak/offpeak/internal/registry"
	"github.com/offpeak/offpeak/scheduler/policy"
	"github.com/offpeak/offpeak/strategies"
)

var (
	groupRe  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)
	pluginRe = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)
)

// MaxNotifyTimeout bounds [notify] timeout, per webhook attempt.
const MaxNotifyTimeout = time.Minute

// has reports whether the file set the key at path (dot-separated).
func has(m map[string]any, path ...string) bool {
	cur := m
	for i, p := range path {
		v, ok := cur[p]
		if !ok {
			return false
		}
		if i == len(path)-1 {
			return true
		}
		if cur, ok = v.(map[string]any); !ok {
			return false
		}
	}
	return false
}

// entry returns the i-th table of an array of tables, however it was written.
func entry(m map[string]any, key string, i int) map[string]any {
	switch v := m[key].(type) {
	case []map[string]any:
		if i < len(v) {
			return v[i]
		}
	case []any:
		if i < len(v) {
			if t, ok := v[i].(map[string]any); ok {
				return t
			}
		}
	}
	return map[string]any{}
}

// validateFile checks the values one file sets, beyond their types.
func (c *collector) validateFile(p *policy.Policy, m map[string]any, opts Options) {
	if names := strategies.Names(); has(m, "strategy") && !slices.Contains(names, p.Strategy) {
		c.addf("strategy", "unknown strategy %q; valid: %s%s", p.Strategy, strings.Join(names, ", "), didYouMean(p.Strategy, names))
	}
	if has(m, "node", "group") && !groupRe.MatchString(p.Node.Group) {
		c.addf("node.group", "%q is not a valid group name (letters, digits, '.', '_', '-'; at most 63)", p.Node.Group)
	}
	if has(m, "node", "id") && (strings.TrimSpace(p.Node.ID) == "" || strings.ContainsAny(p.Node.ID, "/\x00\n")) {
		c.addf("node.id", "%q is not a valid node id", p.Node.ID)
	}
	for i, w := range p.Windows {
		c.validateWindow(fmt.Sprintf("window[%d]", i), w, entry(m, "window", i), opts.Now)
	}
	for i, b := range p.Blackouts {
		path := fmt.Sprintf("blackout[%d]", i)
		t := entry(m, "blackout", i)
		c.validateZone(path+".timezone", b.Timezone)
		if _, ok := t["from"]; !ok {
			c.addf(path+".from", "missing; a blackout needs from and until")
		}
		if _, ok := t["until"]; !ok {
			c.addf(path+".until", "missing; a blackout needs from and until")
		}
		if !b.From.IsZero() && !b.Until.IsZero() && !b.Until.After(b.From) {
			c.addf(path+".until", "%s is not after from (%s)", b.Until.Format(time.RFC3339), b.From.Format(time.RFC3339))
		}
	}
	if has(m, "lock", "plugin") && !pluginRe.MatchString(p.Lock.Plugin) {
		c.addf("lock.plugin", "%q is not a valid plugin name", p.Lock.Plugin)
	}
	if has(m, "lock", "slots") && p.Lock.Slots < 1 {
		c.addf("lock.slots", "must be at least 1, not %d", p.Lock.Slots)
	}
	if has(m, "lock", "groups") {
		for _, g := range slices.Sorted(maps.Keys(p.Lock.Groups)) {
			if !groupRe.MatchString(g) {
				c.addf("lock.groups."+g, "%q is not a valid group name (letters, digits, '.', '_', '-'; at most 63)", g)
			} else if n := p.Lock.Groups[g]; n < 1 {
				c.addf("lock.groups."+g, "must be at least 1 slot, not %d", n)
			}
		}
	}
	if has(m, "lock", "timeout") && p.Lock.Timeout <= 0 {
		c.addf("lock.timeout", "must be positive")
	}
	if has(m, "lock", "config") {
		plugin := p.Lock.Plugin
		if plugin == "" {
			plugin = "file"
		}
		c.validatePluginConfig("lock.config", registry.KindLocker, plugin, p.Lock.Config, opts)
	}
	names := map[string]int{}
	for i, h := range p.Health {
		path := fmt.Sprintf("health[%d]", i)
		switch {
		case h.Name == "":
			c.addf(path+".name", "missing; every check needs a name")
		case names[h.Name] > 0:
			c.addf(path+".name", "duplicate check name %q", h.Name)
		}
		names[h.Name]++
		if h.Plugin == "" {
			c.addf(path+".plugin", "missing; e.g. exec, http, systemd, prometheus, users or a plugin's name")
		} else if !pluginRe.MatchString(h.Plugin) {
			c.addf(path+".plugin", "%q is not a valid plugin name", h.Plugin)
		}
		if h.Phase != "" && h.Phase != policy.PhasePreReboot && h.Phase != policy.PhasePostBoot {
			c.addf(path+".phase", "must be %q or %q, not %q", policy.PhasePreReboot, policy.PhasePostBoot, h.Phase)
		}
		if h.OnError != "" && h.OnError != policy.OnErrorFail && h.OnError != policy.OnErrorPass {
			c.addf(path+".on_error", "must be %q or %q, not %q", policy.OnErrorFail, policy.OnErrorPass, h.OnError)
		}
		if h.Retries < 0 {
			c.addf(path+".retries", "must not be negative")
		}
		if has(entry(m, "health", i), "timeout") && h.Timeout <= 0 {
			c.addf(path+".timeout", "must be positive")
		}
		if h.Plugin != "" {
			c.validatePluginConfig(path+".config", registry.KindCheck, h.Plugin, h.Config, opts)
		}
	}
	for i, d := range p.Detect {
		path := fmt.Sprintf("detect[%d]", i)
		switch d.Kind {
		case policy.DetectFile:
			if !filepath.IsAbs(d.Path) {
				c.addf(path+".path", "must be an absolute path, e.g. /run/reboot-required")
			}
		case policy.DetectCommand:
			if len(d.Argv) == 0 || d.Argv[0] == "" {
				c.addf(path+".argv", "missing; e.g. [\"dnf\", \"needs-restarting\", \"-r\"]")
			}
			if has(entry(m, "detect", i), "needed_exit") && (d.NeededExit < 1 || d.NeededExit > 255) {
				c.addf(path+".needed_exit", "must be an exit status from 1 to 255")
			}
		case policy.DetectInstaller:
		default:
			kinds := []string{string(policy.DetectFile), string(policy.DetectCommand), string(policy.DetectInstaller)}
			c.addf(path+".kind", "must be one of %s, not %q%s", strings.Join(kinds, ", "), d.Kind, didYouMean(string(d.Kind), kinds))
		}
	}
	if backends := opts.backends(); has(m, "installer", "backend") && backends != nil && !slices.Contains(backends, p.Installer.Backend) {
		c.addf("installer.backend", "unknown backend %q; valid: %s%s", p.Installer.Backend, strings.Join(backends, ", "), didYouMean(p.Installer.Backend, backends))
	}
	if has(m, "installer", "config") {
		backend := p.Installer.Backend
		if backend == "" {
			backend = "none"
		}
		c.validatePluginConfig("installer.config", registry.KindInstaller, backend, p.Installer.Config, opts)
	}
	if has(m, "reboot", "method") && p.Reboot.Method != policy.RebootLogind && p.Reboot.Method != policy.RebootSystemctl {
		c.addf("reboot.method", "must be \"logind\" or \"systemctl\", not %q", p.Reboot.Method)
	}
	if has(m, "agent", "interval") && p.Agent.Interval.D() < time.Second {
		c.addf("agent.interval", "must be at least 1s")
	}
	if has(m, "budget", "max_reboots") && p.Budget.MaxReboots < 0 {
		c.addf("budget.max_reboots", "must not be negative (0 turns the budget off)")
	}
	if has(m, "budget", "period") && p.Budget.Period <= 0 {
		c.addf("budget.period", "must be positive")
	}
	if has(m, "notify", "timeout") {
		switch t := p.Notify.Timeout.D(); {
		case t <= 0:
			c.addf("notify.timeout", "must be positive")
		case t > MaxNotifyTimeout:
			c.addf("notify.timeout", "%s is too long: at most %s per attempt (the webhook is told of a reboot before its last window check, so a slow receiver must not eat the window)",
				policy.FormatDuration(t), policy.FormatDuration(MaxNotifyTimeout))
		}
	}
	if has(m, "notify", "webhook") && p.Notify.Webhook != "" {
		u, err := url.Parse(p.Notify.Webhook)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			c.addf("notify.webhook", "must be an http:// or https:// URL")
		}
	}
	for name, pin := range p.Plugins {
		path := "plugins." + name
		if !pluginRe.MatchString(name) {
			c.addf(path, "%q is not a valid plugin name", name)
		}
		if b, err := hex.DecodeString(pin.SHA256); err != nil || len(b) != 32 {
			c.addf(path+".sha256", "must be 64 hexadecimal digits (sha256sum output)")
		}
	}
}

func (c *collector) validateWindow(path string, w policy.Window, t map[string]any, now time.Time) {
	if _, ok := t["start"]; !ok {
		c.addf(path+".start", "missing; a cron spec such as \"0 2 * * 1-5\"")
	} else if sched, err := cronspec.Parse(w.Start); err != nil {
		c.addf(path+".start", "%v", err)
	} else if !cronspec.Fires(sched, now) {
		c.addf(path+".start", "schedule %q never fires", w.Start)
	}
	c.validateZone(path+".timezone", w.Timezone)
	if w.Duration <= 0 {
		if _, ok := t["duration"]; ok {
			c.addf(path+".duration", "a window must be longer than zero")
		} else {
			c.addf(path+".duration", "missing; how long the window stays open, e.g. \"3h\"")
		}
		return
	}
	if w.Cutoff >= w.Duration {
		c.addf(path+".cutoff", "%s is not shorter than the duration %s; no reboot could ever start", policy.FormatDuration(w.Cutoff.D()), policy.FormatDuration(w.Duration.D()))
	}
}

// validateZone checks a timezone key: an IANA name, or empty for UTC.
func (c *collector) validateZone(path, name string) {
	_, err := policy.LoadZone(name)
	switch {
	case errors.Is(err, policy.ErrHostZone):
		c.addf(path, "%q is the zone of whichever host reads the policy, so the same policy would mean different instants on different hosts; name an IANA zone such as \"Europe/Berlin\" (or leave it out for UTC)", name)
	case err != nil:
		c.addf(path, "unknown time zone %q (use an IANA name such as \"Europe/Berlin\")", name)
	}
}

// validatePluginConfig checks a built-in plugin's settings against its
// config struct: unknown keys (with a suggestion) and mistyped values, each
// reported separately.
func (c *collector) validatePluginConfig(path string, kind registry.Kind, plugin string, cfg map[string]any, opts Options) {
	if opts.Builtins == nil || len(cfg) == 0 {
		return
	}
	proto := opts.Builtins.Schema(kind, plugin)
	if proto == nil {
		return
	}
	t := reflect.TypeOf(proto).Elem()
	known := map[string]bool{}
	var names []string
	for i := range t.NumField() {
		tag := strings.Split(t.Field(i).Tag.Get("json"), ",")[0]
		if tag == "" || tag == "-" {
			continue
		}
		known[tag] = true
		names = append(names, tag)
	}
	keys := make([]string, 0, len(cfg))
	for k := range cfg {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		kp := path + "." + k
		if !known[k] {
			c.addf(kp, "unknown key for %s %q%s", kind, plugin, didYouMean(k, names))
			continue
		}
		one, err := json.Marshal(map[string]any{k: cfg[k]})
		if err != nil {
			c.addf(kp, "%v", err)
			continue
		}
		dst := reflect.New(t).Interface()
		dec := json.NewDecoder(bytes.NewReader(one))
		if err := dec.Decode(dst); err != nil {
			var te *json.UnmarshalTypeError
			if errors.As(err, &te) {
				c.addf(kp, "must be %s, not %s", jsonTypeName(te.Type), te.Value)
			} else {
				c.addf(kp, "%v", err)
			}
		}
	}
}

// backends lists the installer backends, or nil when the built-ins are not
// known.
func (o Options) backends() []string {
	if o.Builtins == nil {
		return nil
	}
	return o.Builtins.Names(registry.KindInstaller)
}

func jsonTypeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Slice:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "a table"
	case reflect.Int, reflect.Int64, reflect.Int32, reflect.Uint, reflect.Uint64, reflect.Uint32:
		if t.Name() == "Duration" {
			return "a duration string such as \"30s\""
		}
		return "an integer"
	case reflect.Float64, reflect.Float32:
		return "a number"
	}
	return t.String()
}

func didYouMean(v string, valid []string) string {
	if s := suggest(v, valid); s != "" && s != v {
		return fmt.Sprintf("; did you mean %q?", s)
	}
	return ""
}

// validateMerged checks what only the merged policy can show.
func validateMerged(p *policy.Policy, origin map[string]policy.Source) Errors {
	var errs Errors
	at := func(path string) (string, int) {
		s := origin[path]
		return s.File, s.Line
	}
	if p.Strategy == strategies.Window && len(p.Windows) == 0 {
		f, l := at("strategy")
		errs = append(errs, FieldError{File: f, Line: l, Key: "window", Msg: "strategy \"window\" needs at least one [[window]]"})
	}
	seen := map[string]policy.Source{}
	for i, h := range p.Health {
		if prev, dup := seen[h.Name]; dup {
			errs = append(errs, FieldError{File: h.Source.File, Line: h.Source.Line, Key: fmt.Sprintf("health[%d].name", i),
				Msg: fmt.Sprintf("duplicate check name %q (also at %s)", h.Name, prev)})
		}
		seen[h.Name] = h.Source
	}
	for i, d := range p.Detect {
		if d.Kind == policy.DetectInstaller && (p.Installer.Backend == "none" || p.Installer.Backend == "") {
			errs = append(errs, FieldError{File: d.Source.File, Line: d.Source.Line, Key: fmt.Sprintf("detect[%d].kind", i),
				Msg: "kind \"installer\" needs [installer] backend to be set"})
		}
	}
	return errs
}
