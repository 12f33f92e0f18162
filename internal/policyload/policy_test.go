package policyload

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/offpeak/offpeak/internal/paths"
	"github.com/offpeak/offpeak/internal/registry"
	"github.com/offpeak/offpeak/scheduler/policy"
	"github.com/offpeak/offpeak/strategies"
)

var refNow = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func writeFile(t *testing.T, root, path, content string) string {
	t.Helper()
	full := filepath.Join(root, path)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return full
}

func load(t *testing.T, root string) *policy.Policy {
	t.Helper()
	p, err := Load(Options{Layout: paths.Layout{Root: root}, Now: refNow})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return p
}

func TestNoPolicyUsesDefault(t *testing.T) {
	p := load(t, t.TempDir())
	if p.Strategy != strategies.Window || len(p.Windows) != 1 || p.Windows[0].Name != "nightly" || p.Lock.Plugin != "file" || len(p.Sources) != 0 {
		t.Fatalf("unexpected default: %+v", p)
	}
	if p.Windows[0].Source.File != "" {
		t.Fatalf("default window has source %v", p.Windows[0].Source)
	}
}

func TestMergeRules(t *testing.T) {
	t.Run("search order and later scalar wins", func(t *testing.T) {
		root := t.TempDir()
		writeFile(t, root, "usr/lib/offpeak/policy.d/20-b.toml", "[node]\ngroup = \"vendor-b\"\n")
		writeFile(t, root, "usr/lib/offpeak/policy.d/10-a.toml", "[node]\ngroup = \"vendor-a\"\nid = \"n1\"\n")
		writeFile(t, root, "etc/offpeak/policy.toml", "[lock]\nslots = 3\n")
		writeFile(t, root, "etc/offpeak/policy.d/50-x.toml", "[node]\ngroup = \"admin\"\n")
		writeFile(t, root, "etc/offpeak/policy.d/ignored.txt", "not toml")
		p := load(t, root)
		if p.Node.Group != "admin" || p.Node.ID != "n1" || p.Lock.Slots != 3 {
			t.Fatalf("got group %q id %q slots %d", p.Node.Group, p.Node.ID, p.Lock.Slots)
		}
		want := []string{"10-a.toml", "20-b.toml", "policy.toml", "50-x.toml"}
		if len(p.Sources) != len(want) {
			t.Fatalf("sources %v", p.Sources)
		}
		for i, w := range want {
			if filepath.Base(p.Sources[i]) != w {
				t.Fatalf("sources %v, want order %v", p.Sources, want)
			}
		}
	})
	t.Run("vendor drop-in sorted by name", func(t *testing.T) {
		root := t.TempDir()
		writeFile(t, root, "usr/lib/offpeak/policy.d/b.toml", "strategy = \"reboot\"\n")
		writeFile(t, root, "usr/lib/offpeak/policy.d/a.toml", "strategy = \"off\"\n")
		if p := load(t, root); p.Strategy != "reboot" {
			t.Fatalf("strategy %q, want the later file's", p.Strategy)
		}
	})
	t.Run("a later window list replaces the earlier", func(t *testing.T) {
		root := t.TempDir()
		writeFile(t, root, "etc/offpeak/policy.toml", "[[window]]\nname = \"a\"\nstart = \"0 1 * * *\"\nduration = \"1h\"\n")
		writeFile(t, root, "etc/offpeak/policy.d/10.toml", "[[window]]\nname = \"b\"\nstart = \"0 3 * * *\"\nduration = \"1h\"\n")
		p := load(t, root)
		if len(p.Windows) != 1 || p.Windows[0].Name != "b" {
			t.Fatalf("windows %+v", p.Windows)
		}
		if !strings.HasSuffix(p.Windows[0].Source.File, "10.toml") || p.Windows[0].Source.Line != 1 {
			t.Fatalf("source %v", p.Windows[0].Source)
		}
	})
	t.Run("windows_append appends", func(t *testing.T) {
		root := t.TempDir()
		writeFile(t, root, "etc/offpeak/policy.toml", "[[window]]\nname = \"a\"\nstart = \"0 1 * * *\"\nduration = \"1h\"\n")
		writeFile(t, root, "etc/offpeak/policy.d/10.toml", "windows_append = true\n[[window]]\nname = \"b\"\nstart = \"0 3 * * *\"\nduration = \"1h\"\n")
		p := load(t, root)
		if len(p.Windows) != 2 || p.Windows[0].Name != "a" || p.Windows[1].Name != "b" {
			t.Fatalf("windows %+v", p.Windows)
		}
	})
	t.Run("a file without windows keeps the built-in window", func(t *testing.T) {
		root := t.TempDir()
		writeFile(t, root, "etc/offpeak/policy.toml", "[node]\ngroup = \"web\"\n")
		if p := load(t, root); len(p.Windows) != 1 || p.Windows[0].Name != "nightly" {
			t.Fatalf("windows %+v", p.Windows)
		}
	})
	t.Run("tables merge key by key", func(t *testing.T) {
		root := t.TempDir()
		writeFile(t, root, "etc/offpeak/policy.toml", "[lock]\nplugin = \"etcd\"\nslots = 2\n")
		writeFile(t, root, "etc/offpeak/policy.d/10.toml", "[lock]\nstale_after = \"2h\"\n")
		p := load(t, root)
		if p.Lock.Plugin != "etcd" || p.Lock.Slots != 2 || p.Lock.StaleAfter.D() != 2*time.Hour {
			t.Fatalf("lock %+v", p.Lock)
		}
	})
	t.Run("plugin config tables replace whole", func(t *testing.T) {
		root := t.TempDir()
		writeFile(t, root, "etc/offpeak/policy.toml", "[lock]\nplugin = \"etcd\"\n[lock.config]\nendpoints = [\"a:2379\"]\nprefix = \"x/\"\n")
		writeFile(t, root, "etc/offpeak/policy.d/10.toml", "[lock]\nplugin = \"consul\"\n[lock.config]\naddress = \"127.0.0.1:8500\"\n")
		p := load(t, root)
		if len(p.Lock.Config) != 1 || p.Lock.Config["address"] != "127.0.0.1:8500" {
			t.Fatalf("config %+v", p.Lock.Config)
		}
	})
	t.Run("--policy names one file and ignores the search order", func(t *testing.T) {
		root := t.TempDir()
		writeFile(t, root, "etc/offpeak/policy.toml", "strategy = \"off\"\n")
		one := writeFile(t, t.TempDir(), "one.toml", "strategy = \"reboot\"\n")
		p, err := Load(Options{Path: one, Layout: paths.Layout{Root: root}, Now: refNow})
		if err != nil {
			t.Fatal(err)
		}
		if p.Strategy != "reboot" || len(p.Sources) != 1 {
			t.Fatalf("strategy %q sources %v", p.Strategy, p.Sources)
		}
	})
	t.Run("OFFPEAK_ROOT points the search at another tree", func(t *testing.T) {
		root := t.TempDir()
		writeFile(t, root, "etc/offpeak/policy.toml", "strategy = \"off\"\n")
		t.Setenv(paths.EnvRoot, root)
		p, err := Load(Options{Layout: paths.FromEnv(""), Now: refNow})
		if err != nil || p.Strategy != "off" {
			t.Fatalf("strategy %v err %v", p, err)
		}
	})
}

func TestErrorsNameFileLineKey(t *testing.T) {
	tests := []struct {
		name, src string
		line      int
		key, msg  string
	}{
		{"unknown key suggests", "[node]\ngorup = \"x\"\n", 2, "node.gorup", `did you mean "group"`},
		{"unknown top-level key", "stratgy = \"off\"\n", 1, "stratgy", `did you mean "strategy"`},
		{"unknown key in a window", "[[window]]\nstart = \"0 2 * * *\"\nduration = \"1h\"\ntimezon = \"UTC\"\n", 4, "window[0].timezon", `did you mean "timezone"`},
		{"wrong type", "[lock]\nslots = \"two\"\n", 2, "lock.slots", "must be an integer"},
		{"bad duration", "[[window]]\nstart = \"0 2 * * *\"\nduration = \"3 hours\"\n", 3, "window[0].duration", "bad duration"},
		{"bad cron spec", "[[window]]\nstart = \"0 25 * * *\"\nduration = \"1h\"\n", 2, "window[0].start", "bad cron spec"},
		{"TZ= inside the spec does not panic", "[[window]]\nstart = \"TZ=UTC\"\nduration = \"1h\"\n", 2, "window[0].start", "time zone inside the spec"},
		{"unknown time zone", "[[window]]\nstart = \"0 2 * * *\"\nduration = \"1h\"\ntimezone = \"Europe/Berlinn\"\n", 4, "window[0].timezone", "unknown time zone"},
		{"@every", "[[window]]\nstart = \"@every 1h\"\nduration = \"1h\"\n", 2, "window[0].start", "@every"},
		{"zero-length window", "[[window]]\nstart = \"0 2 * * *\"\nduration = \"0s\"\n", 3, "window[0].duration", "longer than zero"},
		{"missing duration", "[[window]]\nstart = \"0 2 * * *\"\n", 1, "window[0].duration", "missing"},
		{"cutoff not below duration", "[[window]]\nstart = \"0 2 * * *\"\nduration = \"1h\"\ncutoff = \"1h\"\n", 4, "window[0].cutoff", "not shorter than the duration"},
		{"blackout until before from", "[[blackout]]\nfrom = 2026-12-20T00:00:00Z\nuntil = 2026-12-19T00:00:00Z\n", 3, "blackout[0].until", "not after from"},
		{"schedule never fires", "[[window]]\nstart = \"0 0 31 2 *\"\nduration = \"1h\"\n", 2, "window[0].start", "never fires"},
		{"bad strategy suggests", "strategy = \"windows\"\n", 1, "strategy", `did you mean "window"`},
		{"second window's line", "[[window]]\nstart = \"0 2 * * *\"\nduration = \"1h\"\n\n[[window]]\nname = \"b\"\nstart = \"0 3 * * *\"\nduration = \"-1h\"\n", 8, "window[1].duration", "duration"},
		{"health phase", "[[health]]\nname = \"a\"\nplugin = \"exec\"\nphase = \"before\"\n", 4, "health[0].phase", "pre-reboot"},
		{"syntax error has a line", "[node\ngroup = 1\n", 2, "", "table name"},
		{"bad pin", "[plugins.hold]\nsha256 = \"abc\"\n", 2, "plugins.hold.sha256", "64 hexadecimal"},
		{"served group without slots", "[lock.groups]\nweb = 2\ndb = 0\n", 3, "lock.groups.db", "at least 1 slot"},
		{"served group name", "[lock.groups]\n\"web/1\" = 2\n", 2, "lock.groups.web/1", "not a valid group name"},
		{"served group slots type", "[lock.groups]\nweb = \"2\"\n", 2, "lock.groups.web", "must be an integer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("/etc/offpeak/policy.toml", []byte(tt.src), Options{Now: refNow})
			var errs Errors
			if !errors.As(err, &errs) || len(errs) == 0 {
				t.Fatalf("want Errors, got %v", err)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatal("errors do not wrap ErrInvalid")
			}
			e := errs[0]
			if e.File != "/etc/offpeak/policy.toml" || e.Line != tt.line || (tt.key != "" && e.Key != tt.key) || !strings.Contains(e.Msg, tt.msg) {
				t.Fatalf("got %q, want line %d key %q message containing %q", e.Error(), tt.line, tt.key, tt.msg)
			}
			if want := "/etc/offpeak/policy.toml:"; !strings.HasPrefix(e.Error(), want) {
				t.Fatalf("%q does not start with FILE:LINE", e.Error())
			}
		})
	}
}

func TestAllErrorsOfAFileAtOnce(t *testing.T) {
	src := "stratgy = \"off\"\n[lock]\nslots = 0\n[[window]]\nstart = \"@every 5m\"\nduration = \"0s\"\n"
	_, err := Parse("p.toml", []byte(src), Options{Now: refNow})
	var errs Errors
	if !errors.As(err, &errs) {
		t.Fatal(err)
	}
	keys := map[string]bool{}
	for _, e := range errs {
		keys[e.Key] = true
	}
	for _, k := range []string{"stratgy", "lock.slots", "window[0].start", "window[0].duration"} {
		if !keys[k] {
			t.Errorf("missing error for %s; got %v", k, errs)
		}
	}
	for i := 1; i < len(errs); i++ {
		if errs[i].Line < errs[i-1].Line {
			t.Fatalf("errors not sorted by line: %v", errs)
		}
	}
}

func TestErrorsAcrossFiles(t *testing.T) {
	root := t.TempDir()
	writeFile(t, root, "etc/offpeak/policy.toml", "[node]\ngrop = \"x\"\n")
	writeFile(t, root, "etc/offpeak/policy.d/10.toml", "\n\n[lock]\nslots = -1\n")
	_, err := Load(Options{Layout: paths.Layout{Root: root}, Now: refNow})
	var errs Errors
	if !errors.As(err, &errs) || len(errs) != 2 {
		t.Fatalf("want two errors, got %v", err)
	}
	if !strings.HasSuffix(errs[0].File, "10.toml") && !strings.HasSuffix(errs[1].File, "10.toml") {
		t.Fatalf("errors %v", errs)
	}
}

func TestPluginConfigChecked(t *testing.T) {
	type etcdConfig struct {
		Endpoints []string `json:"endpoints"`
		Prefix    string   `json:"prefix"`
	}
	opts := Options{Now: refNow, Builtins: catalog(func(kind registry.Kind, name string) any {
		if kind == registry.KindLocker && name == "etcd" {
			return &etcdConfig{}
		}
		return nil
	})}
	src := "[lock]\nplugin = \"etcd\"\n[lock.config]\nendpoint = [\"x\"]\nprefix = 3\n"
	_, err := Parse("p.toml", []byte(src), opts)
	var errs Errors
	if !errors.As(err, &errs) || len(errs) != 2 {
		t.Fatalf("got %v", err)
	}
	if errs[0].Key != "lock.config.endpoint" || errs[0].Line != 4 || !strings.Contains(errs[0].Msg, `"endpoints"`) {
		t.Errorf("got %v", errs[0])
	}
	if errs[1].Key != "lock.config.prefix" || errs[1].Line != 5 || !strings.Contains(errs[1].Msg, "must be a string") {
		t.Errorf("got %v", errs[1])
	}
	// A third-party plugin's settings pass through unchecked.
	if _, err := Parse("p.toml", []byte("[lock]\nplugin = \"zk\"\n[lock.config]\nanything = 1\n"), opts); err != nil {
		t.Fatal(err)
	}
}

// catalog is a Catalog of one schema function and no names.
type catalog func(kind registry.Kind, name string) any

func (c catalog) Schema(kind registry.Kind, name string) any { return c(kind, name) }
func (c catalog) Names(registry.Kind) []string               { return nil }

func TestBadFileKeepsNothing(t *testing.T) {
	// A later bad file fails the whole load; the caller keeps its old policy.
	root := t.TempDir()
	writeFile(t, root, "etc/offpeak/policy.toml", "strategy = \"off\"\n")
	writeFile(t, root, "etc/offpeak/policy.d/10.toml", "strategy = 5\n")
	p, err := Load(Options{Layout: paths.Layout{Root: root}, Now: refNow})
	if err == nil || p != nil {
		t.Fatalf("got %v %v", p, err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(DefaultTOML))
	f.Add([]byte("[[window]]\nstart = \"TZ=UTC\"\nduration = \"1h\"\n"))
	f.Add([]byte("[[window]]\nstart = \"CRON_TZ=\"\nduration = \"1h\"\n"))
	f.Add([]byte("window = [{start = \"0 2 * * *\", duration = \"1h\"}]\n"))
	f.Add([]byte("[[blackout]]\nfrom = 2025-01-01\nuntil = 10:00:00\n"))
	f.Add([]byte("[lock.config]\na = \"\"\"\nmulti\n\"\"\"\nb = [\n1,\n2]\n"))
	f.Add([]byte("[[health]]\nname=\"x\"\nplugin=\"exec\"\n[health.config]\nargv=[\"true\"]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse("fuzz.toml", data, Options{Now: refNow})
		if err == nil && p == nil {
			t.Fatal("nil policy without error")
		}
		if err != nil {
			var errs Errors
			if errors.As(err, &errs) {
				for _, e := range errs {
					if e.File == "" && e.Line == 0 && e.Key == "" {
						t.Fatalf("error without a location: %v", e)
					}
				}
			}
		}
	})
}
