package ostree_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/offpeak/offpeak/installer"
	"github.com/offpeak/offpeak/installer/ostree"
)

// fakeRunner answers commands from a table and records every call.
type fakeRunner struct {
	mu    sync.Mutex
	out   map[string][]byte // by joined argv
	err   map[string]error
	calls [][]string
}

func (f *fakeRunner) Run(_ context.Context, argv []string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, argv)
	key := strings.Join(argv, " ")
	return f.out[key], f.err[key]
}

func fixture(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestRPMOSTreeStatusFromFixtures(t *testing.T) {
	tests := []struct {
		fixture string
		want    installer.Status
	}{
		{"rpm-ostree-idle.json", installer.Status{
			Backend: "rpm-ostree", BootedVersion: "40.20240709.3.1",
			Detail: "booted from fedora:fedora/x86_64/coreos/stable"}},
		{"rpm-ostree-staged.json", installer.Status{
			Backend: "rpm-ostree", BootedVersion: "40.20240709.3.1", Staged: true, StagedVersion: "40.20240728.3.0",
			Detail: "staged 40.20240728.3.0 (9a7b3c1d2e4f); booted from fedora:fedora/x86_64/coreos/stable"}},
		{"rpm-ostree-pending.json", installer.Status{
			Backend: "rpm-ostree", BootedVersion: "40.20240709.3.1", Staged: true, StagedVersion: "40.20240728.3.0",
			Detail: "pending 40.20240728.3.0 (9a7b3c1d2e4f); booted from fedora:fedora/x86_64/coreos/stable"}},
		{"rpm-ostree-oci-staged.json", installer.Status{
			Backend: "rpm-ostree", BootedVersion: "40.20240709.3.1", Staged: true, StagedVersion: "40.20240728.3.0",
			Detail: "staged 40.20240728.3.0 (9a7b3c1d2e4f); booted from ostree-remote-image:fedora:docker://quay.io/fedora/fedora-coreos:stable"}},
		{"rpm-ostree-finalization-locked.json", installer.Status{
			Backend: "rpm-ostree", BootedVersion: "40.20240709.3.1",
			Detail: "staged 40.20240728.3.0 is finalization-locked (a plain reboot will not apply it); booted from fedora:fedora/x86_64/coreos/stable"}},
		{"rpm-ostree-transaction.json", installer.Status{
			Backend: "rpm-ostree", BootedVersion: "40.20240709.3.1",
			Detail: "booted from fedora:fedora/x86_64/coreos/stable; transaction in progress"}},
	}
	for _, tt := range tests {
		t.Run(tt.fixture, func(t *testing.T) {
			run := &fakeRunner{out: map[string][]byte{"rpm-ostree status --json": fixture(t, tt.fixture)}}
			got, err := (&ostree.RPMOSTree{Runner: run}).Status(context.Background())
			if err != nil {
				t.Fatalf("Status: %v", err)
			}
			if got != tt.want {
				t.Fatalf("Status =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

func TestBootcStatusFromFixtures(t *testing.T) {
	tests := []struct {
		fixture string
		want    installer.Status
	}{
		{"bootc-staged.json", installer.Status{
			Backend: "bootc", BootedVersion: "stream10.20240715.0", Staged: true, StagedVersion: "stream10.20240801.0",
			Detail: "staged quay.io/centos-bootc/centos-bootc:stream10@sha256:8f2f1a7c0b9e4d3a6c5b8e7f0a1d2c3b4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b; " +
				"booted quay.io/centos-bootc/centos-bootc:stream10@sha256:2d6b3c4a5f1e0d9c8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c"}},
		{"bootc-booted.json", installer.Status{
			Backend: "bootc", BootedVersion: "stream10.20240715.0",
			Detail: "booted quay.io/centos-bootc/centos-bootc:stream10@sha256:2d6b3c4a5f1e0d9c8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c"}},
		{"bootc-rollback-queued.json", installer.Status{
			Backend: "bootc", BootedVersion: "stream10.20240715.0", Staged: true, StagedVersion: "stream10.20240701.0",
			Detail: "rollback queued to quay.io/centos-bootc/centos-bootc:stream10@sha256:0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9; " +
				"booted quay.io/centos-bootc/centos-bootc:stream10@sha256:2d6b3c4a5f1e0d9c8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c"}},
	}
	for _, tt := range tests {
		t.Run(tt.fixture, func(t *testing.T) {
			run := &fakeRunner{out: map[string][]byte{"bootc status --format=json": fixture(t, tt.fixture)}}
			got, err := (&ostree.Bootc{Runner: run}).Status(context.Background())
			if err != nil {
				t.Fatalf("Status: %v", err)
			}
			if got != tt.want {
				t.Fatalf("Status =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}

func TestMalformedStatusIsErrUnknown(t *testing.T) {
	tests := []struct {
		name    string
		parse   func([]byte) (installer.Status, error)
		input   string
		wantMsg string
	}{
		{"rpm-ostree truncated", ostree.ParseRPMOSTreeStatus, `{"deployments":[{"booted":tru`, "malformed JSON"},
		{"rpm-ostree not json", ostree.ParseRPMOSTreeStatus, "error: Connection timed out", "malformed JSON"},
		{"rpm-ostree wrong type", ostree.ParseRPMOSTreeStatus, `{"deployments":[{"booted":"yes","checksum":"a"}]}`, "malformed JSON"},
		{"rpm-ostree no deployments", ostree.ParseRPMOSTreeStatus, `{"transaction":null}`, `no "deployments"`},
		{"rpm-ostree none booted", ostree.ParseRPMOSTreeStatus, `{"deployments":[{"checksum":"abc","booted":false}]}`, "no booted deployment"},
		{"rpm-ostree two booted", ostree.ParseRPMOSTreeStatus, `{"deployments":[{"checksum":"a","booted":true},{"checksum":"b","booted":true}]}`, "both booted"},
		{"rpm-ostree no checksum", ostree.ParseRPMOSTreeStatus, `{"deployments":[{"booted":true}]}`, "no checksum"},
		{"bootc truncated", ostree.ParseBootcStatus, `{"apiVersion":"org.containers.bootc/v1","kind":`, "malformed JSON"},
		{"bootc wrong kind", ostree.ParseBootcStatus, `{"apiVersion":"v1","kind":"Pod","status":{}}`, "not a BootcHost"},
		{"bootc empty output", ostree.ParseBootcStatus, "", "malformed JSON"},
		{"bootc booted null", ostree.ParseBootcStatus, `{"apiVersion":"org.containers.bootc/v1","kind":"BootcHost","status":{"booted":null}}`, "no booted deployment"},
		{"bootc empty booted", ostree.ParseBootcStatus, `{"apiVersion":"org.containers.bootc/v1","kind":"BootcHost","status":{"booted":{}}}`, "neither image nor ostree"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.parse([]byte(tt.input))
			if !errors.Is(err, installer.ErrUnknown) {
				t.Fatalf("err = %v, want ErrUnknown", err)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("err = %q, want it to mention %q", err, tt.wantMsg)
			}
		})
	}
}

func TestBootcNotBootedFixtureIsErrUnknown(t *testing.T) {
	_, err := ostree.ParseBootcStatus(fixture(t, "bootc-not-booted.json"))
	if !errors.Is(err, installer.ErrUnknown) {
		t.Fatalf("err = %v, want ErrUnknown", err)
	}
}

func TestStatusCommandFailureIsErrUnknown(t *testing.T) {
	boom := errors.New("exit status 1: error: Could not acquire lock")
	tests := []struct {
		name string
		b    installer.Backend
		argv string
	}{
		{"rpm-ostree", &ostree.RPMOSTree{}, "rpm-ostree status --json"},
		{"bootc", &ostree.Bootc{}, "bootc status --format=json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			run := &fakeRunner{err: map[string]error{tt.argv: boom}}
			switch b := tt.b.(type) {
			case *ostree.RPMOSTree:
				b.Runner = run
			case *ostree.Bootc:
				b.Runner = run
			}
			_, err := tt.b.Status(context.Background())
			if !errors.Is(err, installer.ErrUnknown) || !errors.Is(err, boom) {
				t.Fatalf("err = %v, want ErrUnknown wrapping the command error", err)
			}
		})
	}
}

func TestCommandsRun(t *testing.T) {
	tests := []struct {
		name string
		op   func(ctx context.Context, run ostree.Runner) error
		want [][]string
	}{
		{"rpm-ostree stage", func(ctx context.Context, r ostree.Runner) error { return (&ostree.RPMOSTree{Runner: r}).Stage(ctx) },
			[][]string{{"rpm-ostree", "upgrade"}}},
		{"rpm-ostree rollback", func(ctx context.Context, r ostree.Runner) error { return (&ostree.RPMOSTree{Runner: r}).Rollback(ctx) },
			[][]string{{"rpm-ostree", "rollback"}}},
		{"rpm-ostree mark good", func(ctx context.Context, r ostree.Runner) error { return (&ostree.RPMOSTree{Runner: r}).MarkGood(ctx) },
			nil},
		{"bootc stage", func(ctx context.Context, r ostree.Runner) error { return (&ostree.Bootc{Runner: r}).Stage(ctx) },
			[][]string{{"bootc", "upgrade"}}},
		{"bootc rollback", func(ctx context.Context, r ostree.Runner) error { return (&ostree.Bootc{Runner: r}).Rollback(ctx) },
			[][]string{{"bootc", "rollback"}}},
		{"bootc mark good", func(ctx context.Context, r ostree.Runner) error { return (&ostree.Bootc{Runner: r}).MarkGood(ctx) },
			nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			run := &fakeRunner{}
			if err := tt.op(context.Background(), run); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(run.calls, tt.want) {
				t.Fatalf("ran %v, want %v", run.calls, tt.want)
			}
		})
	}
}

func TestStageFailureIsReturned(t *testing.T) {
	boom := errors.New("exit status 1")
	run := &fakeRunner{err: map[string]error{"rpm-ostree upgrade": boom, "bootc upgrade": boom}}
	if err := (&ostree.RPMOSTree{Runner: run}).Stage(context.Background()); !errors.Is(err, boom) {
		t.Fatalf("rpm-ostree Stage = %v", err)
	}
	if err := (&ostree.Bootc{Runner: run}).Stage(context.Background()); !errors.Is(err, boom) {
		t.Fatalf("bootc Stage = %v", err)
	}
}

func TestNames(t *testing.T) {
	if got := (&ostree.RPMOSTree{}).Name(); got != "rpm-ostree" {
		t.Fatalf("rpm-ostree Name = %q", got)
	}
	if got := (&ostree.Bootc{}).Name(); got != "bootc" {
		t.Fatalf("bootc Name = %q", got)
	}
}

func TestExecRunner(t *testing.T) {
	out, err := ostree.ExecRunner{}.Run(context.Background(), []string{"echo", "hello"})
	if err != nil || string(out) != "hello\n" {
		t.Fatalf("echo: %q, %v", out, err)
	}
	if _, err := (ostree.ExecRunner{}).Run(context.Background(), []string{"false"}); err == nil {
		t.Fatal("false succeeded")
	}
	if _, err := (ostree.ExecRunner{}).Run(context.Background(), nil); err == nil {
		t.Fatal("empty argv succeeded")
	}
}

func fuzzSeeds(f *testing.F, prefix string) {
	entries, err := os.ReadDir("testdata")
	if err != nil {
		f.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) && strings.HasSuffix(e.Name(), ".json") {
			b, err := os.ReadFile(filepath.Join("testdata", e.Name()))
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	f.Add([]byte(`{}`))
	f.Add([]byte(`null`))
}

// checkParse asserts the parser's contract on any input: either an error
// wrapping ErrUnknown, or a status that is internally consistent.
func checkParse(t *testing.T, name string, st installer.Status, err error) {
	if err != nil {
		if !errors.Is(err, installer.ErrUnknown) {
			t.Fatalf("error does not wrap ErrUnknown: %v", err)
		}
		return
	}
	if st.Backend != name {
		t.Fatalf("backend = %q", st.Backend)
	}
	if !st.Staged && st.StagedVersion != "" {
		t.Fatalf("staged version %q without a staged update", st.StagedVersion)
	}
}

func FuzzParseRPMOSTreeStatus(f *testing.F) {
	fuzzSeeds(f, "rpm-ostree")
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := ostree.ParseRPMOSTreeStatus(data)
		checkParse(t, "rpm-ostree", st, err)
	})
}

func FuzzParseBootcStatus(f *testing.F) {
	fuzzSeeds(f, "bootc")
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := ostree.ParseBootcStatus(data)
		checkParse(t, "bootc", st, err)
	})
}
