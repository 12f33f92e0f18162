package publicapi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/offpeak/offpeak/installer/gpt"
	"github.com/offpeak/offpeak/lockers/file"
	"github.com/offpeak/offpeak/lockers/lockertest"
	"github.com/offpeak/offpeak/plugins"
	"github.com/offpeak/offpeak/scheduler/policy"
)

// TestCalendar: windows in their own zone, the cutoff, a blackout cut out.
func TestCalendar(t *testing.T) {
	freeze := policy.Blackout{
		From:   time.Date(2026, 12, 20, 0, 0, 0, 0, time.UTC),
		Until:  time.Date(2027, 1, 4, 0, 0, 0, 0, time.UTC),
		Reason: "year-end freeze",
	}
	cal, err := Weeknights("Europe/Berlin", freeze)
	if err != nil {
		t.Fatal(err)
	}
	berlin, _ := time.LoadLocation("Europe/Berlin")
	for _, tc := range []struct {
		name string
		at   time.Time
		open bool
		next time.Time
	}{
		{"Tuesday 02:10 Berlin", time.Date(2026, 6, 2, 2, 10, 0, 0, berlin), true, time.Date(2026, 6, 2, 2, 10, 0, 0, berlin)},
		{"past the cutoff", time.Date(2026, 6, 2, 4, 40, 0, 0, berlin), false, time.Date(2026, 6, 3, 2, 0, 0, 0, berlin)},
		{"Saturday", time.Date(2026, 6, 6, 3, 0, 0, 0, berlin), false, time.Date(2026, 6, 8, 2, 0, 0, 0, berlin)},
		{"in the blackout", time.Date(2026, 12, 22, 2, 30, 0, 0, berlin), false, time.Date(2027, 1, 4, 2, 0, 0, 0, berlin)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, open := cal.Allowed(tc.at)
			if open != tc.open {
				t.Fatalf("Allowed = %v (%+v), want %v", open, w, tc.open)
			}
			if open && (w.Name != "weeknights" || !w.RebootUntil.Equal(time.Date(2026, 6, 2, 4, 30, 0, 0, berlin))) {
				t.Fatalf("window %+v", w)
			}
			next, ok := cal.NextStart(tc.at)
			if !ok || !next.Equal(tc.next) {
				t.Fatalf("NextStart = %s %v, want %s", next, ok, tc.next)
			}
		})
	}
	if _, err := Weeknights("Local", freeze); err == nil {
		t.Fatal("the host's own zone was accepted")
	}
}

// TestGPTBackend stages an image into the passive slot of a disk image made
// by sgdisk, with the kernel command line read below a root of the
// caller's choosing.
func TestGPTBackend(t *testing.T) {
	for _, tool := range []string{"sgdisk", "cgpt"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (Debian packages gdisk and cgpt)", tool)
		}
	}
	const usrType = "5dfbf5f4-2848-4bac-aa5e-0d9a20b745a6"
	const usrA = "7130c94a-213a-4e5a-8e26-6cce9662f132"
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(disk, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(disk, 32<<20); err != nil {
		t.Fatal(err)
	}
	run(t, "sgdisk", "-n", "3:2048:+8M", "-t", "3:"+usrType, "-c", "3:USR-A", "-u", "3:"+usrA,
		"-n", "4:0:+8M", "-t", "4:"+usrType, "-c", "4:USR-B", disk)
	run(t, "cgpt", "add", "-i", "3", "-P", "1", "-T", "0", "-S", "1", disk)

	root := filepath.Join(dir, "root")
	join := Below(root)
	if err := os.MkdirAll(filepath.Dir(join(gpt.DefaultCmdline)), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(join(gpt.DefaultCmdline), []byte("mount.usr=PARTUUID="+usrA+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	image := filepath.Join(dir, "usr.img")
	data := []byte(strings.Repeat("offpeak", 1<<16))
	if err := os.WriteFile(image, data, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)

	be, err := gpt.NewBackend(gpt.Config{Disk: disk, Image: image, SHA256: hex.EncodeToString(sum[:])}, join, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	st, err := be.Status(ctx)
	if err != nil || st.Staged || !strings.HasPrefix(st.BootedVersion, "USR-A ") {
		t.Fatalf("before Stage: %+v, %v", st, err)
	}
	if err := be.Stage(ctx); err != nil {
		t.Fatal(err)
	}
	st, err = be.Status(ctx)
	if err != nil || !st.Staged || !strings.HasPrefix(st.StagedVersion, "USR-B ") {
		t.Fatalf("after Stage: %+v, %v", st, err)
	}
	// The install record is kept below the root too.
	if recs, errs := gpt.InstallRecords(join(gpt.DefaultRecordDir)); len(recs) != 1 || len(errs) != 0 {
		t.Fatalf("install records %+v %v", recs, errs)
	}
}

// TestLockerConformance runs the conformance suite on the file locker.
func TestLockerConformance(t *testing.T) {
	dir := t.TempDir()
	lockertest.Run(t, func(t *testing.T) plugins.Locker {
		l := file.New(nil)
		cfg, err := json.Marshal(file.Config{Dir: dir, PollInterval: plugins.Duration(10 * time.Millisecond)})
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Configure(context.Background(), cfg); err != nil {
			t.Fatal(err)
		}
		return l
	})
}

func run(t *testing.T, argv ...string) {
	t.Helper()
	if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
}
