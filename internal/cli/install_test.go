package cli

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/offpeak/offpeak/installer/gpt"
)

// installTestDisk makes a small Flatcar-like disk image with sgdisk and
// cgpt: USR-A booted and good at priority 1, USR-B empty.
func installTestDisk(t *testing.T) string {
	t.Helper()
	for _, tool := range []string{"sgdisk", "cgpt"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (Debian packages gdisk and cgpt); CI installs it", tool)
		}
	}
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 32<<20); err != nil {
		t.Fatal(err)
	}
	const usr = "5dfbf5f4-2848-4bac-aa5e-0d9a20b745a6"
	for _, argv := range [][]string{
		{"sgdisk", "-n", "1:2048:+4M", "-t", "1:EF00", "-c", "1:EFI-SYSTEM",
			"-n", "3:0:+8M", "-t", "3:" + usr, "-c", "3:USR-A",
			"-n", "4:0:+8M", "-t", "4:" + usr, "-c", "4:USR-B",
			"-n", "9:0:0", "-t", "9:8300", "-c", "9:ROOT", img},
		{"cgpt", "add", "-i", "3", "-P", "1", "-T", "0", "-S", "1", img},
	} {
		if out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", argv, err, out)
		}
	}
	return img
}

func installState(t *testing.T, out string) gpt.State {
	t.Helper()
	var st gpt.State
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("bad JSON %q: %v", out, err)
	}
	return st
}

func TestInstallCommands(t *testing.T) {
	disk := installTestDisk(t)
	dir := t.TempDir()
	data := bytes.Repeat([]byte("offpeak usr image "), 50_000)
	imgPath := filepath.Join(dir, "usr.img")
	os.WriteFile(imgPath, data, 0o644)
	s := sha256.Sum256(data)
	sum := hex.EncodeToString(s[:])
	pub, priv, _ := ed25519.GenerateKey(nil)
	sigPath, pubPath := filepath.Join(dir, "usr.sig"), filepath.Join(dir, "key.pub")
	os.WriteFile(sigPath, ed25519.Sign(priv, []byte(sum)), 0o644)
	os.WriteFile(pubPath, pub, 0o644)

	// Errors first: nothing may change.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"install", "--image", imgPath}, "--disk is required"},
		{[]string{"install", "--disk", disk}, "--image is required"},
		{[]string{"install", "--disk", disk, "--image", imgPath, "--sig", sigPath}, "--sig and --pubkey go together"},
		{[]string{"install", "--disk", disk, "--image", imgPath, "--booted", "USR-A", "--sha256", strings.Repeat("0", 64)}, "checksum mismatch"},
		{[]string{"install", "--disk", disk, "--image", imgPath, "--booted", "USR-A", "-o", "yaml"}, "--output must be one of"},
		{[]string{"install", "status", "--disk", disk, "--root", dir}, "booted slot unknown"},
		{[]string{"install", "rollback", "--disk", disk, "--booted", "USR-A"}, "no slot to roll back to"},
	} {
		_, errOut, code := run(t, &App{Root: t.TempDir()}, tc.args...)
		if code == 0 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want an error with %q", tc.args, code, errOut, tc.want)
		}
	}

	out, errOut, code := run(t, &App{Root: t.TempDir()}, "install", "--disk", disk, "--image", imgPath, "--sha256", sum,
		"--sig", sigPath, "--pubkey", pubPath, "--booted", "USR-A", "--output", "json")
	if code != 0 {
		t.Fatalf("install: exit %d: %s", code, errOut)
	}
	var res gpt.Result
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	if res.Verified != "sha256+signature" || !res.Staged || res.Passive.Label != "USR-B" || res.Passive.Priority != 2 || res.Passive.Tries != 1 {
		t.Fatalf("install result %+v", res)
	}

	// The booted slot comes from /proc/cmdline below --root.
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "proc"), 0o755)
	setBooted := func(partuuid string) {
		os.WriteFile(filepath.Join(root, "proc", "cmdline"), []byte("mount.usr=PARTUUID="+partuuid+"\n"), 0o644)
	}
	setBooted(res.Booted.PARTUUID)
	out, errOut, code = run(t, &App{}, "--root", root, "install", "status", "--disk", disk, "-o", "json")
	if st := installState(t, out); code != 0 || !st.Staged || st.Next != "USR-B" {
		t.Fatalf("status: exit %d %s %+v", code, errOut, st)
	}

	if p, err := gpt.Boot(context.Background(), disk); err != nil || p.Name != "USR-B" {
		t.Fatalf("boot: %s %v", p.Name, err)
	}
	setBooted(res.Passive.PARTUUID)
	out, _, code = run(t, &App{}, "--root", root, "install", "mark-good", "--disk", disk, "-o", "json")
	if st := installState(t, out); code != 0 || st.Booted.Label != "USR-B" || !st.Booted.Successful || st.Booted.Tries != 0 {
		t.Fatalf("mark-good: exit %d %+v", code, st)
	}
	out, _, code = run(t, &App{}, "--root", root, "install", "rollback", "--disk", disk)
	if code != 0 || !strings.Contains(out, "next boot: USR-A") {
		t.Fatalf("rollback: exit %d\n%s", code, out)
	}

	// Damage the primary header; repair rewrites it from the backup.
	f, err := os.OpenFile(disk, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte{0xff}, 512+16)
	f.Close()
	out, _, code = run(t, &App{Root: t.TempDir()}, "install", "repair", "--disk", disk)
	if code != 0 || !strings.Contains(out, "repaired: primary GPT unusable") {
		t.Fatalf("repair: exit %d\n%s", code, out)
	}
	out, _, code = run(t, &App{Root: t.TempDir()}, "install", "repair", "--disk", disk)
	if code != 0 || !strings.Contains(out, "nothing to repair") {
		t.Fatalf("second repair: exit %d\n%s", code, out)
	}
}

func TestInstallFromStdin(t *testing.T) {
	disk := installTestDisk(t)
	data := bytes.Repeat([]byte{7}, 1<<20)
	var out, errOut bytes.Buffer
	app := &App{Stdin: bytes.NewReader(data), Stdout: &out, Stderr: &errOut, Root: t.TempDir()}
	code := app.Run(context.Background(), []string{"install", "--disk", disk, "--image", "-", "--booted", "USR-A"})
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	s := sha256.Sum256(data)
	for _, want := range []string{"installed 1048576 bytes into USR-B", "sha256 " + hex.EncodeToString(s[:]) + " (verified: none)", "staged:   yes"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
