package builtin

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/offpeak/offpeak/internal/paths"
	"github.com/offpeak/offpeak/internal/redact"
	"github.com/offpeak/offpeak/internal/registry"
)

// TestEverySchemaDeclaresItsSecrets: each built-in locker, check and
// installer backend lists the config keys `policy show` must hide, and every
// key named like a secret is among them.
func TestEverySchemaDeclaresItsSecrets(t *testing.T) {
	reg := New()
	for _, kind := range []registry.Kind{registry.KindLocker, registry.KindCheck, registry.KindInstaller} {
		for _, name := range reg.Names(kind) {
			schema := reg.Schema(kind, name)
			if schema == nil {
				t.Errorf("%s %s: no config schema", kind, name)
				continue
			}
			for _, p := range redact.SchemaProblems(schema) {
				t.Errorf("%s %s: %s", kind, name, p)
			}
		}
	}
	if len(reg.SecretKeys(registry.KindLocker, "etcd")) == 0 || len(reg.SecretKeys(registry.KindCheck, "http")) == 0 {
		t.Error("etcd's password or http's headers are not declared secret")
	}
}

// TestSchemaProblemsCatchesAForgottenSecret: a schema with a password key
// and no table is reported.
func TestSchemaProblemsCatchesAForgottenSecret(t *testing.T) {
	type forgot struct {
		URL      string `json:"url"`
		Password string `json:"password"`
	}
	if p := redact.SchemaProblems(&forgot{}); len(p) != 1 {
		t.Fatalf("problems %q", p)
	}
}

// TestNamesAreUnique: a name listed twice would hide the second module.
func TestNamesAreUnique(t *testing.T) {
	lists := map[string][]string{}
	for _, m := range Lockers() {
		lists["locker"] = append(lists["locker"], m.Name)
	}
	for _, m := range Checks() {
		lists["check"] = append(lists["check"], m.Name)
	}
	for _, m := range Installers() {
		lists["installer"] = append(lists["installer"], m.Name)
	}
	for kind, names := range lists {
		seen := map[string]bool{}
		for _, n := range names {
			if seen[n] || n == "" {
				t.Errorf("%s %q listed twice or unnamed", kind, n)
			}
			seen[n] = true
		}
	}
}

// TestInstallers builds each backend the way the agent does.
func TestInstallers(t *testing.T) {
	layout := paths.Layout{Root: t.TempDir()}
	reg := New()
	tests := []struct {
		backend string
		config  map[string]any
		name    string
		wantErr bool
	}{
		{"none", nil, "", false},
		{"sentinel", map[string]any{"paths": []string{"/run/reboot-required"}}, "sentinel", false},
		{"rpm-ostree", nil, "rpm-ostree", false},
		{"bootc", nil, "bootc", false},
		{"gpt", map[string]any{"disk": filepath.Join(t.TempDir(), "disk.img")}, "gpt", false},
		{"gpt", nil, "", true},
		{"sentinel", map[string]any{"pathz": []string{"/x"}}, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.backend, func(t *testing.T) {
			raw, err := json.Marshal(tt.config)
			if err != nil {
				t.Fatal(err)
			}
			b, closeFn, ok, err := reg.Installers.New(context.Background(), tt.backend, registry.Env{Root: layout.Root, Join: layout.Join, Config: raw})
			defer closeFn()
			if !ok {
				t.Fatal("not registered")
			}
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v", err)
			}
			if err != nil {
				return
			}
			if tt.name == "" {
				if b != nil {
					t.Fatalf("backend %v for none", b)
				}
				return
			}
			if b.Name() != tt.name {
				t.Fatalf("name %q", b.Name())
			}
			if reg.Schema(registry.KindInstaller, tt.backend) == nil {
				t.Fatal("no config schema")
			}
		})
	}
	if _, _, ok, _ := reg.Installers.New(context.Background(), "floppy", registry.Env{}); ok {
		t.Fatal("an unknown backend was built")
	}
	if reg.Schema(registry.KindInstaller, "floppy") != nil {
		t.Fatal("schema for an unknown backend")
	}
}
