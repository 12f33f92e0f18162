package installers

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/offpeak/offpeak/internal/paths"
	"github.com/offpeak/offpeak/internal/policy"
	"github.com/offpeak/offpeak/internal/redact"
)

func TestNew(t *testing.T) {
	layout := paths.Layout{Root: t.TempDir()}
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
		{"floppy", nil, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.backend, func(t *testing.T) {
			b, closeFn, err := New(context.Background(), tt.backend, tt.config, layout, nil)
			if closeFn != nil {
				defer closeFn()
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
			if Config(tt.backend) == nil {
				t.Fatal("no config schema")
			}
		})
	}
	if Config("floppy") != nil {
		t.Fatal("schema for an unknown backend")
	}
}

// TestEveryBackendDeclaresItsSecrets: each installer backend's schema lists
// the config keys `policy show` must hide.
func TestEveryBackendDeclaresItsSecrets(t *testing.T) {
	for _, backend := range policy.Backends {
		schema := Config(backend)
		if schema == nil {
			t.Errorf("%s: no config schema", backend)
			continue
		}
		for _, p := range redact.SchemaProblems(schema) {
			t.Errorf("%s: %s", backend, p)
		}
	}
}
