package cli

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/offpeak/offpeak/installer/gpt"
	"github.com/offpeak/offpeak/internal/statefile"
	"github.com/offpeak/offpeak/scheduler"
)

// fallbackDisk is the operator's starting point of the failed-install
// reports: USR-A (3) booted and good at priority 2, USR-B (4) the
// known-good fallback at priority 1.
func fallbackDisk(t *testing.T) string {
	t.Helper()
	disk := installTestDisk(t)
	cgpt(t, "add", "-i", "3", "-P", "2", "-T", "0", "-S", "1", disk)
	cgpt(t, "add", "-i", "4", "-P", "1", "-T", "0", "-S", "1", disk)
	return disk
}

func cgpt(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("cgpt", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("cgpt %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// cgptPTS reads priority, tries and successful of a partition with cgpt.
func cgptPTS(t *testing.T, disk string, idx int) string {
	t.Helper()
	i := strconv.Itoa(idx)
	return "P" + cgpt(t, "show", "-i", i, "-P", disk) + " T" + cgpt(t, "show", "-i", i, "-T", disk) + " S" + cgpt(t, "show", "-i", i, "-S", disk)
}

// partRange is a partition's [start, end) in bytes, from cgpt.
func partRange(t *testing.T, disk string, idx int) (int64, int64) {
	t.Helper()
	i := strconv.Itoa(idx)
	b, _ := strconv.ParseInt(cgpt(t, "show", "-i", i, "-b", disk), 10, 64)
	s, _ := strconv.ParseInt(cgpt(t, "show", "-i", i, "-s", disk), 10, 64)
	return b * 512, (b + s) * 512
}

func copyDisk(t *testing.T, src string) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(t.TempDir(), "want.img")
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dst
}

// sameOutside fails unless two disk images are byte-identical outside the
// given partition (whose contents a failed install leaves undefined).
func sameOutside(t *testing.T, got, want string, idx int) {
	t.Helper()
	a, b := readBytes(t, got), readBytes(t, want)
	start, end := partRange(t, want, idx)
	if len(a) != len(b) {
		t.Fatalf("%s is %d bytes, %s is %d", got, len(a), want, len(b))
	}
	for _, r := range [][2]int64{{0, start}, {end, int64(len(a))}} {
		if x, y := a[r[0]:r[1]], b[r[0]:r[1]]; !bytes.Equal(x, y) {
			for i := range x {
				if x[i] != y[i] {
					t.Fatalf("disk differs from the cgpt reference at byte %d (LBA %d)", r[0]+int64(i), (r[0]+int64(i))/512)
				}
			}
		}
	}
}

func readBytes(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// startInstall runs `offpeak install --image -` as a separate process (the
// test binary doubles as offpeak) and returns it with its stdin.
func startInstall(t *testing.T, root, disk, sum string) (*exec.Cmd, io.WriteCloser, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "--root", root, "install", "--disk", disk, "--image", "-", "--booted", "USR-A", "--sha256", sum)
	cmd.Env = append(os.Environ(), envExec+"=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd, stdin, &stderr
}

// waitForBytes returns once the partition at [start, ...) holds want: the
// install has begun writing.
func waitForBytes(t *testing.T, disk string, start int64, want []byte) {
	t.Helper()
	f, err := os.Open(disk)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := make([]byte, len(want))
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	hang := time.After(2 * time.Minute) // hang guard only
	for {
		if _, err := f.ReadAt(got, start); err == nil && bytes.Equal(got, want) {
			return
		}
		select {
		case <-tick.C:
		case <-hang:
			t.Fatal("the install never wrote the first chunk of the image")
		}
	}
}

// TestFailedInstallLeavesSlotUnbootable drives `offpeak install` as an
// operator would into a disk whose USR-B is a good fallback. Every way of
// failing after the first write leaves USR-B unbootable, exactly as
// `cgpt add -i 4 -P 0 -T 0 -S 0` would, makes `install rollback` refuse
// and say why, and shows in `install status` and `offpeak status`; a good
// install afterwards stages USR-B as always.
func TestFailedInstallLeavesSlotUnbootable(t *testing.T) {
	data := bytes.Repeat([]byte("offpeak usr image v2 "), 150_000) // ~3 MiB
	s := sha256.Sum256(data)
	sum := hex.EncodeToString(s[:])
	_, priv, _ := ed25519.GenerateKey(nil)
	pub, _, _ := ed25519.GenerateKey(nil)

	tests := []struct {
		name   string
		reason string // in the error, the refusal and both statuses
		fail   func(t *testing.T, root, disk string) (string, int)
	}{
		{name: "wrong checksum", reason: "checksum mismatch", fail: func(t *testing.T, root, disk string) (string, int) {
			img := writeFile(t, filepath.Join(t.TempDir(), "usr.img"), string(data))
			_, errOut, code := run(t, &App{}, "--root", root, "install", "--disk", disk, "--image", img, "--booted", "USR-A", "--sha256", strings.Repeat("ab", 32))
			return errOut, code
		}},
		{name: "bad signature", reason: "signature invalid", fail: func(t *testing.T, root, disk string) (string, int) {
			dir := t.TempDir()
			img := writeFile(t, filepath.Join(dir, "usr.img"), string(data))
			sig := writeFile(t, filepath.Join(dir, "usr.sig"), string(ed25519.Sign(priv, []byte(sum))))
			key := writeFile(t, filepath.Join(dir, "key.pub"), string(pub))
			_, errOut, code := run(t, &App{}, "--root", root, "install", "--disk", disk, "--image", img, "--booted", "USR-A", "--sig", sig, "--pubkey", key)
			return errOut, code
		}},
		{name: "truncated stdin", reason: "checksum mismatch", fail: func(t *testing.T, root, disk string) (string, int) {
			var out, errOut bytes.Buffer
			app := &App{Stdin: bytes.NewReader(data[:len(data)/2]), Stdout: &out, Stderr: &errOut, Exe: os.Args[0]}
			code := app.Run(context.Background(), []string{"--root", root, "install", "--disk", disk, "--image", "-", "--booted", "USR-A", "--sha256", sum})
			return errOut.String(), code
		}},
		{name: "SIGINT while stdin stays open", reason: "interrupted", fail: func(t *testing.T, root, disk string) (string, int) {
			cmd, stdin, stderr := startInstall(t, root, disk, sum)
			// More than one buffer, so the first one reaches the disk; then
			// nothing more and no EOF, as from a stalled download.
			if _, err := stdin.Write(data[:3<<19]); err != nil {
				t.Fatal(err)
			}
			start, _ := partRange(t, disk, 4)
			waitForBytes(t, disk, start, data[:1<<20])
			if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			select {
			case <-exited:
			case <-time.After(2 * time.Minute): // hang guard only
				t.Fatalf("install ignored SIGINT while its stdin stayed open; stderr:\n%s", stderr.String())
			}
			return stderr.String(), cmd.ProcessState.ExitCode()
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			disk, root := fallbackDisk(t), t.TempDir()
			want := copyDisk(t, disk)
			cgpt(t, "add", "-i", "4", "-P", "0", "-T", "0", "-S", "0", want)

			errOut, code := tc.fail(t, root, disk)
			if code == 0 || !strings.Contains(errOut, tc.reason) {
				t.Fatalf("install: exit %d, stderr %q; want a failure naming %q", code, errOut, tc.reason)
			}
			if got := cgptPTS(t, disk, 4); got != "P0 T0 S0" {
				t.Errorf("USR-B after the failed install: %s, want P0 T0 S0", got)
			}
			if got := cgptPTS(t, disk, 3); got != "P2 T0 S1" {
				t.Errorf("USR-A after the failed install: %s, want P2 T0 S1", got)
			}
			sameOutside(t, disk, want, 4)

			before := readBytes(t, disk)
			_, errOut, code = run(t, &App{}, "--root", root, "install", "rollback", "--disk", disk, "--booted", "USR-A")
			if code == 0 || !strings.Contains(errOut, "no slot to roll back to") || !strings.Contains(errOut, tc.reason) {
				t.Errorf("rollback: exit %d, stderr %q; want a refusal naming %q", code, errOut, tc.reason)
			}
			if !bytes.Equal(readBytes(t, disk), before) {
				t.Error("the refused rollback changed the disk")
			}

			out, _, code := run(t, &App{}, "--root", root, "install", "status", "--disk", disk, "--booted", "USR-A")
			if code != 0 || !strings.Contains(out, "USR-B is unbootable") || !strings.Contains(out, tc.reason) {
				t.Errorf("install status: exit %d\n%s", code, out)
			}
			out, _, _ = run(t, &App{}, "--root", root, "install", "status", "--disk", disk, "--booted", "USR-A", "-o", "json")
			var ist struct {
				Passive struct {
					Unbootable bool `json:"unbootable"`
				} `json:"passive"`
				PassiveStatus string `json:"passive_status"`
			}
			if err := json.Unmarshal([]byte(out), &ist); err != nil || !ist.Passive.Unbootable || !strings.Contains(ist.PassiveStatus, tc.reason) {
				t.Errorf("install status -o json: %v\n%s", err, out)
			}
			out, _, code = run(t, &App{}, "--root", root, "status")
			if code != 0 || !strings.Contains(out, "USR-B is unbootable") || !strings.Contains(out, tc.reason) {
				t.Errorf("status: exit %d\n%s", code, out)
			}
			out, _, _ = run(t, &App{}, "--root", root, "status", "-o", "json")
			var js struct {
				Installs []struct {
					Slot, Result, Error string
				} `json:"install_failures"`
			}
			if err := json.Unmarshal([]byte(out), &js); err != nil || len(js.Installs) != 1 || js.Installs[0].Slot != "USR-B" ||
				js.Installs[0].Result != "failed" || !strings.Contains(js.Installs[0].Error, tc.reason) {
				t.Errorf("status -o json: %v\n%s", err, out)
			}

			img := writeFile(t, filepath.Join(t.TempDir(), "usr.img"), string(data))
			out, errOut, code = run(t, &App{}, "--root", root, "install", "--disk", disk, "--image", img, "--booted", "USR-A", "--sha256", sum)
			if code != 0 || !strings.Contains(out, "staged:   yes") {
				t.Fatalf("good install: exit %d: %s%s", code, out, errOut)
			}
			if got := cgptPTS(t, disk, 4); got != "P3 T1 S0" {
				t.Errorf("USR-B after the good install: %s, want P3 T1 S0", got)
			}
			cgpt(t, "add", "-i", "4", "-P", "3", "-T", "1", "-S", "0", want)
			sameOutside(t, disk, want, 4)
			out, _, _ = run(t, &App{}, "--root", root, "status")
			if strings.Contains(out, "unbootable") {
				t.Errorf("status after the good install still reports a failure:\n%s", out)
			}
		})
	}
}

// TestStatusShowsInstallFailureBesideTheDecision: with an agent's decision
// on record, `offpeak status` prints it and, after it, the slot a failed
// install left unbootable; JSON keeps the decision's keys at the top.
func TestStatusShowsInstallFailureBesideTheDecision(t *testing.T) {
	root := t.TempDir()
	saveState(t, root, scheduler.State{Phase: scheduler.PhaseIdle, Last: &scheduler.Result{Decision: scheduler.DecisionIdle, Reason: "no update staged", Time: time.Now()}})
	rec := gpt.InstallRecord{Disk: "/dev/vda", Slot: "USR-B", PARTUUID: "e03dd35c-7c2d-4a47-b3fe-27f15780a57c", Result: gpt.InstallFailed,
		Error: "image signature invalid: ed25519 signature does not verify", Started: time.Now()}
	if err := (statefile.File{Path: filepath.Join(root, "var/lib/offpeak/install", rec.PARTUUID+".json")}).Save(rec); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := run(t, &App{Root: root}, "status")
	if code != 0 || !strings.Contains(out, "reason:") || !strings.Contains(out, "install: USR-B is unbootable: its last install, started") ||
		!strings.Contains(out, "failed: image signature invalid") || !strings.Contains(out, "/dev/vda") {
		t.Errorf("status: exit %d\n%s%s", code, out, errOut)
	}
	out, _, _ = run(t, &App{Root: root}, "status", "-o", "json")
	var js map[string]any
	if err := json.Unmarshal([]byte(out), &js); err != nil || js["decision"] != "idle" || js["install_failures"] == nil {
		t.Errorf("status -o json: %v\n%s", err, out)
	}
}
