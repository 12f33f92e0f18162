package builtin

import (
	"testing"

	"github.com/offpeak/offpeak/internal/redact"
)

// TestEverySchemaDeclaresItsSecrets: each built-in locker and check lists
// the config keys `policy show` must hide, and every key named like a
// secret is among them.
func TestEverySchemaDeclaresItsSecrets(t *testing.T) {
	reg := New()
	schemas := map[string]any{}
	for name, l := range reg.Lockers {
		schemas["locker "+name] = l.Config()
	}
	for name, c := range reg.Checks {
		schemas["check "+name] = c.Config()
	}
	for name, schema := range schemas {
		for _, p := range redact.SchemaProblems(schema) {
			t.Errorf("%s: %s", name, p)
		}
	}
	if len(redact.KeysOf(reg.Lockers["etcd"].Config())) == 0 || len(redact.KeysOf(reg.Checks["http"].Config())) == 0 {
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
