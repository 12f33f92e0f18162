package sentinel

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/offpeak/offpeak/installer"
)

func TestStatus(t *testing.T) {
	root := t.TempDir()
	join := func(p string) string { return filepath.Join(root, p) }
	b := &Backend{Join: join}
	st, err := b.Status(context.Background())
	if err != nil || st.Staged {
		t.Fatalf("got %+v %v", st, err)
	}
	if err := os.MkdirAll(join("/run"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(join("/run/reboot-needed"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(join("/run/reboot-needed.pkgs"), []byte("linux-image\nlibc6\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	st, err = b.Status(context.Background())
	if err != nil || !st.Staged || st.StagedVersion != "linux-image,libc6" {
		t.Fatalf("got %+v %v", st, err)
	}
	if err := b.Stage(context.Background()); !errors.Is(err, installer.ErrNotSupported) {
		t.Fatalf("stage: %v", err)
	}
	if err := b.MarkGood(context.Background()); err != nil {
		t.Fatal(err)
	}
}
