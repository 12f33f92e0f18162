// Package policy holds the values of offpeak's policy: what the agent, the
// calendar and the commands read once a policy is loaded. Code outside
// offpeak can build one by hand (a Window, a Blackout) and pass it to
// scheduler.NewCalendar; reading TOML files, merging them and validating the
// result is offpeak's own business and not part of this package.
package policy

import (
	"errors"
	"fmt"
	"strings"
	"time"
	_ "time/tzdata" // zone rules must not depend on the host
)

// Policy is the effective, merged policy.
type Policy struct {
	Strategy  string               `toml:"strategy" json:"strategy"`
	Node      Node                 `toml:"node" json:"node"`
	Windows   []Window             `toml:"window,omitempty" json:"window"`
	Blackouts []Blackout           `toml:"blackout,omitempty" json:"blackout"`
	Lock      Lock                 `toml:"lock" json:"lock"`
	Health    []Health             `toml:"health,omitempty" json:"health"`
	Detect    []Detect             `toml:"detect,omitempty" json:"detect"`
	Installer Installer            `toml:"installer" json:"installer"`
	Reboot    Reboot               `toml:"reboot" json:"reboot"`
	Agent     Agent                `toml:"agent" json:"agent"`
	PostBoot  PostBoot             `toml:"post_boot" json:"post_boot"`
	Budget    Budget               `toml:"budget" json:"budget"`
	Notify    Notify               `toml:"notify" json:"notify"`
	Plugins   map[string]PluginPin `toml:"plugins,omitempty" json:"plugins"`

	// Sources lists the files merged into this policy, in order; empty means
	// the built-in default alone.
	Sources []string `toml:"-" json:"-"`
}

// Node identifies this host.
type Node struct {
	ID       string `toml:"id" json:"id"` // default: /etc/machine-id
	Group    string `toml:"group" json:"group"`
	Hostname string `toml:"hostname" json:"hostname"` // default: os.Hostname
}

// Window is one maintenance window: a cron start in its own zone and an
// elapsed duration.
type Window struct {
	Name     string   `toml:"name" json:"name"`
	Start    string   `toml:"start" json:"start"`
	Duration Duration `toml:"duration" json:"duration"`
	Timezone string   `toml:"timezone" json:"timezone"`
	Cutoff   Duration `toml:"cutoff" json:"cutoff"`

	Source Source `toml:"-" json:"-"`
}

// Location returns the window's zone (UTC when unset).
func (w Window) Location() (*time.Location, error) {
	return LoadZone(w.Timezone)
}

// ErrHostZone means a zone name that stands for the reading host's own zone.
var ErrHostZone = errors.New("names the zone of whichever host reads the policy")

// LoadZone returns the zone named by a policy: "" is UTC, and names that mean
// the host's local zone ("Local", "localtime") are refused, because one
// policy must mean the same instants on every host that reads it.
func LoadZone(name string) (*time.Location, error) {
	switch {
	case name == "":
		return time.UTC, nil
	case strings.EqualFold(name, "Local"), strings.EqualFold(name, "localtime"):
		return nil, fmt.Errorf("%q %w", name, ErrHostZone)
	}
	return time.LoadLocation(name)
}

// Blackout is a period in which no reboot starts.
type Blackout struct {
	From     time.Time `toml:"from" json:"from"`
	Until    time.Time `toml:"until" json:"until"`
	Reason   string    `toml:"reason" json:"reason"`
	Timezone string    `toml:"timezone" json:"timezone"` // zone for local date-times; default UTC

	Source Source `toml:"-" json:"-"`
}

// Lock chooses the locker.
type Lock struct {
	Plugin     string         `toml:"plugin" json:"plugin"`
	Slots      int            `toml:"slots" json:"slots"`
	StaleAfter Duration       `toml:"stale_after" json:"stale_after"`
	Timeout    Duration       `toml:"timeout" json:"timeout"`
	Config     map[string]any `toml:"config" json:"config,omitempty"`
	// Groups names the groups `offpeak fleetlock serve` serves, with the
	// slot count each is created with; empty serves [node] group alone,
	// with slots.
	Groups map[string]int `toml:"groups,omitempty" json:"groups,omitempty"`
}

// ServedGroups returns the groups a FleetLock server on this policy serves,
// with their slot counts.
func (l Lock) ServedGroups(nodeGroup string) map[string]int {
	if len(l.Groups) > 0 {
		return l.Groups
	}
	return map[string]int{nodeGroup: max(l.Slots, 1)}
}

// Health is one health check.
type Health struct {
	Name     string         `toml:"name" json:"name"`
	Plugin   string         `toml:"plugin" json:"plugin"`
	Phase    Phase          `toml:"phase" json:"phase"`
	Timeout  Duration       `toml:"timeout" json:"timeout"`
	Retries  int            `toml:"retries" json:"retries"`
	Interval Duration       `toml:"interval" json:"interval"`
	OnError  OnError        `toml:"on_error" json:"on_error"` // "fail" (default) or "pass"
	Config   map[string]any `toml:"config" json:"config,omitempty"`

	Source Source `toml:"-" json:"-"`
}

// Phase is when a health check runs.
type Phase string

// Health check phases.
const (
	PhasePreReboot Phase = "pre-reboot"
	PhasePostBoot  Phase = "post-boot"
)

// OnError is what a check that could not decide (outcome error) counts as.
type OnError string

// on_error values.
const (
	OnErrorFail OnError = "fail"
	OnErrorPass OnError = "pass"
)

// Detect is one reboot-needed source.
type Detect struct {
	Kind       DetectKind `toml:"kind" json:"kind"`               // file | command | installer
	Path       string     `toml:"path" json:"path"`               // kind file
	Argv       []string   `toml:"argv" json:"argv"`               // kind command
	NeededExit int        `toml:"needed_exit" json:"needed_exit"` // kind command; default 1
	Timeout    Duration   `toml:"timeout" json:"timeout"`

	Source Source `toml:"-" json:"-"`
}

// DetectKind is where a reboot-needed source looks.
type DetectKind string

// Detection kinds.
const (
	DetectFile      DetectKind = "file"
	DetectCommand   DetectKind = "command"
	DetectInstaller DetectKind = "installer"
)

// Installer chooses the update backend.
type Installer struct {
	Backend string         `toml:"backend" json:"backend"` // none | sentinel | gpt | update-engine | rpm-ostree | bootc
	Config  map[string]any `toml:"config" json:"config,omitempty"`
}

// Reboot says how to reboot.
type Reboot struct {
	Method         RebootMethod `toml:"method" json:"method"` // logind | systemctl
	Warn           Duration     `toml:"warn" json:"warn"`     // broadcast this long before rebooting
	Message        string       `toml:"message" json:"message"`
	MaxInhibitWait Duration     `toml:"max_inhibit_wait" json:"max_inhibit_wait"`
}

// RebootMethod is how the machine is rebooted.
type RebootMethod string

// Reboot methods.
const (
	RebootLogind    RebootMethod = "logind"
	RebootSystemctl RebootMethod = "systemctl"
)

// Agent tunes the long-running loop.
type Agent struct {
	Interval Duration `toml:"interval" json:"interval"`
	Jitter   Duration `toml:"jitter" json:"jitter"`
}

// PostBoot tunes the after-reboot phase.
type PostBoot struct {
	Grace Duration `toml:"grace" json:"grace"`
}

// Budget limits reboots per node so no reboot loop is possible.
type Budget struct {
	MaxReboots int      `toml:"max_reboots" json:"max_reboots"`
	Period     Duration `toml:"period" json:"period"`
}

// Notify configures the webhook.
type Notify struct {
	Webhook string            `toml:"webhook" json:"webhook"`
	CAFile  string            `toml:"ca_file" json:"ca_file"`
	Timeout Duration          `toml:"timeout" json:"timeout"`
	Headers map[string]string `toml:"headers" json:"-"` // may hold credentials: never printed
}

// PluginPin pins a plugin binary.
type PluginPin struct {
	SHA256 string `toml:"sha256" json:"sha256"`
}

// Source is where an entry was defined.
type Source struct {
	File string
	Line int
}

func (s Source) String() string {
	if s.File == "" {
		return "built-in default"
	}
	return fmt.Sprintf("%s:%d", s.File, s.Line)
}

// Duration is a time.Duration written as a string ("90m", "2h", "1d").
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) MarshalText() ([]byte, error) { return []byte(FormatDuration(time.Duration(d))), nil }

func (d *Duration) UnmarshalText(b []byte) error {
	v, err := ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// ParseDuration accepts Go durations plus a "d" (24h) unit.
func ParseDuration(s string) (time.Duration, error) {
	if s == "" {
		return 0, fmt.Errorf("empty duration")
	}
	var days time.Duration
	if i := indexDays(s); i >= 0 {
		var n int
		if _, err := fmt.Sscanf(s[:i], "%d", &n); err != nil || fmt.Sprint(n) != s[:i] || n < 0 {
			return 0, fmt.Errorf("bad duration %q (use e.g. \"90m\", \"2h30m\", \"1d\")", s)
		}
		days = time.Duration(n) * 24 * time.Hour
		s = s[i+1:]
		if s == "" {
			return days, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("bad duration %q (use e.g. \"90m\", \"2h30m\", \"1d\")", s)
	}
	if d < 0 {
		return 0, fmt.Errorf("negative duration %q", s)
	}
	return days + d, nil
}

func indexDays(s string) int {
	for i, c := range s {
		if c == 'd' {
			return i
		}
		if c != '-' && (c < '0' || c > '9') {
			return -1
		}
	}
	return -1
}

// FormatDuration prints d compactly ("3h", "1h30m", "45s").
func FormatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
