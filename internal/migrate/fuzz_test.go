package migrate_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/offpeak/offpeak/internal/migrate"
	"github.com/offpeak/offpeak/internal/policyload"
)

// fuzzMigration feeds arbitrary source files to a migration: it must never
// panic, fail only with ErrInvalid, and whatever it produces must be a
// valid policy.
func fuzzMigration(f *testing.F, tool string, seeds ...string) {
	for _, s := range seeds {
		b, err := os.ReadFile(filepath.Join("testdata", s))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	t, err := migrate.Lookup(tool)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(tt *testing.T, data []byte) {
		res, err := t.Migrate([]migrate.Source{{Name: "src", Data: data}}, migrate.Options{Now: notesNow})
		if err != nil {
			if !errors.Is(err, migrate.ErrInvalid) {
				tt.Fatalf("error without ErrInvalid: %v", err)
			}
			return
		}
		if _, err := policyload.Parse("migrated.toml", res.Policy, policyload.Options{Now: notesNow}); err != nil {
			tt.Fatalf("invalid policy from %q: %v\n%s", data, err, res.Policy)
		}
	})
}

func FuzzLocksmith(f *testing.F) {
	fuzzMigration(f, "locksmith", "locksmith/weekly/etc/flatcar/update.conf", "locksmith/daily/update.conf", "locksmith/coreos/update.conf")
}

func FuzzZincati(f *testing.F) {
	fuzzMigration(f, "zincati", "zincati/periodic/etc/zincati/config.d/55-updates-strategy.toml", "zincati/fleetlock/55-updates-strategy.toml", "zincati/dst/55-updates-strategy.toml")
}

func FuzzKured(f *testing.F) {
	fuzzMigration(f, "kured", "kured/kured-ds.yaml", "kured/kured.flags")
}
