package gpt

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/offpeak/offpeak/installer"
	"github.com/offpeak/offpeak/internal/paths"
	"github.com/offpeak/offpeak/plugins"
)

func TestBackendLifecycle(t *testing.T) {
	img := newImage(t)
	a, b := part(t, img, idxA), part(t, img, idxB)
	root := t.TempDir()
	layout := paths.Layout{Root: root}
	setCmdline := func(p Partition) {
		t.Helper()
		path := layout.Join("/proc/cmdline")
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte("mount.usr=/dev/mapper/usr verity.usr=PARTUUID="+p.ID.String()+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	k := newKeys(t)
	data := imageData(1<<20, 20)
	dir := t.TempDir()
	sigPath, pubPath := filepath.Join(dir, "usr.sig"), filepath.Join(dir, "key.pub")
	os.WriteFile(sigPath, ed25519.Sign(k.priv, SignedMessage(sha(data))), 0o644)
	os.WriteFile(pubPath, k.pub, 0o644)

	// The config arrives as JSON from the policy.
	var cfg Config
	raw, _ := json.Marshal(map[string]string{"disk": img, "image": writeImageFile(t, data), "sha256": sha(data), "sig": sigPath, "pubkey": pubPath})
	if err := plugins.DecodeConfig(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	be, err := NewBackend(cfg, layout.Join, nil)
	if err != nil {
		t.Fatal(err)
	}
	var _ installer.Backend = be
	if be.Name() != "gpt" {
		t.Errorf("Name %q", be.Name())
	}
	ctx := ctxT(t)

	// No /proc/cmdline below the root and nothing configured: unknown.
	if _, err := be.Status(ctx); !errors.Is(err, installer.ErrUnknown) || !errors.Is(err, ErrBootedUnknown) {
		t.Fatalf("Status without a booted slot = %v, want ErrUnknown", err)
	}
	setCmdline(a)
	st, err := be.Status(ctx)
	if err != nil || st.Staged || !strings.HasPrefix(st.BootedVersion, "USR-A ") || st.StagedVersion != "" {
		t.Fatalf("before Stage: %+v, %v", st, err)
	}
	if err := be.Stage(ctx); err != nil {
		t.Fatal(err)
	}
	st, err = be.Status(ctx)
	if err != nil || !st.Staged || st.StagedVersion != "USR-B "+b.ID.String() || st.Backend != "gpt" {
		t.Fatalf("after Stage: %+v, %v", st, err)
	}

	if p, err := Boot(ctx, img); err != nil || p.Index != idxB {
		t.Fatalf("boot: %v %v", p.Name, err)
	}
	setCmdline(b)
	if err := be.MarkGood(ctx); err != nil {
		t.Fatal(err)
	}
	st, err = be.Status(ctx)
	if err != nil || st.Staged || !strings.HasPrefix(st.BootedVersion, "USR-B ") {
		t.Fatalf("after MarkGood: %+v, %v", st, err)
	}
	wantCgpt(t, img, idxB, 2, 0, 1)

	if err := be.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	wantCgpt(t, img, idxA, 3, 0, 1)
	if p, err := Boot(ctx, img); err != nil || p.Index != idxA {
		t.Fatalf("boot after rollback: %v %v", p.Name, err)
	}
}

func TestBackendConfigErrors(t *testing.T) {
	for name, cfg := range map[string]Config{
		"no disk":         {},
		"bad checksum":    {Disk: "/dev/null", SHA256: "xyz"},
		"sig without key": {Disk: "/dev/null", Sig: "/s"},
		"key without sig": {Disk: "/dev/null", PubKey: "/k"},
	} {
		if _, err := NewBackend(cfg, nil, nil); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s: %v, want ErrInvalidArgument", name, err)
		}
	}
	be, err := NewBackend(Config{Disk: "/nonexistent"}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := be.Stage(ctxT(t)); !errors.Is(err, ErrNoImage) {
		t.Errorf("Stage without image = %v, want ErrNoImage", err)
	}
	if _, err := be.Status(ctxT(t)); !errors.Is(err, installer.ErrUnknown) {
		t.Errorf("Status of a missing disk = %v, want ErrUnknown", err)
	}
	var cfg Config
	if err := plugins.DecodeConfig([]byte(`{"disk":"/dev/vda","imgae":"x"}`), &cfg); err == nil {
		t.Error("unknown key accepted")
	}
}

// TestDefaultRecordDirIsTheStateDirs: the backend, given offpeak's join,
// keeps its install records where `offpeak install` and `status` look.
func TestDefaultRecordDirIsTheStateDirs(t *testing.T) {
	for _, root := range []string{"", "/", "/tmp/r"} {
		l := paths.Layout{Root: root}
		if got, want := l.Join(DefaultRecordDir), l.InstallRecordDir(); got != want {
			t.Errorf("root %q: %s, want %s", root, got, want)
		}
	}
}
