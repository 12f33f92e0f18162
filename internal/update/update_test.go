package update_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/offpeak/offpeak/installer/gpt"
	"github.com/offpeak/offpeak/internal/update"
	"github.com/offpeak/offpeak/internal/update/fetch"
	"github.com/offpeak/offpeak/internal/update/manifest"
	"github.com/offpeak/offpeak/internal/update/omaha"
	"github.com/offpeak/offpeak/internal/update/omaha/omahatest"
	"github.com/offpeak/offpeak/internal/update/payload"
	"github.com/offpeak/offpeak/internal/update/payload/payloadtest"
)

const appID = "{5f5b0c52-7c8f-4c55-a8f0-3b6a1c0e2d41}"

var (
	keyA = sync.OnceValue(func() *rsa.PrivateKey { return genKey() })
	keyB = sync.OnceValue(func() *rsa.PrivateKey { return genKey() })
)

func genKey() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
}

func run(t testing.TB, argv ...string) string {
	t.Helper()
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	return string(out)
}

// newDisk makes a 40 MiB Flatcar-like disk image: USR-A (3) booted and
// good, USR-B (4) empty.
func newDisk(t testing.TB) string {
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
	if err := os.Truncate(img, 40<<20); err != nil {
		t.Fatal(err)
	}
	usr := "5dfbf5f4-2848-4bac-aa5e-0d9a20b745a6"
	run(t, "sgdisk", "-n", "3:2048:+16M", "-t", "3:"+usr, "-c", "3:USR-A",
		"-n", "4:0:+16M", "-t", "4:"+usr, "-c", "4:USR-B", img)
	run(t, "cgpt", "add", "-i", "3", "-P", "1", "-T", "0", "-S", "1", img)
	return img
}

// prio reads priority, tries and successful of partition idx with cgpt.
func prio(t testing.TB, img string, idx int) (p, tries, s int) {
	t.Helper()
	get := func(flag string) int {
		n, err := strconv.Atoi(strings.TrimSpace(run(t, "cgpt", "show", "-i", strconv.Itoa(idx), flag, img)))
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	return get("-P"), get("-T"), get("-S")
}

// partition reads n bytes of partition 4 (USR-B) of the image.
func partition(t testing.TB, img string, n int) []byte {
	t.Helper()
	start, err := strconv.ParseInt(strings.TrimSpace(run(t, "cgpt", "show", "-i", "4", "-b", img)), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, start*512); err != nil {
		t.Fatal(err)
	}
	return b
}

func osImage(n int, seed uint64) []byte {
	r := mrand.New(mrand.NewPCG(seed, 3))
	b := make([]byte, n)
	for i := 0; i < n; {
		run := min(n-i, 1+r.IntN(5000))
		c := byte(r.Uint32())
		for j := range run {
			if r.IntN(4) == 0 {
				b[i+j] = byte(r.Uint32())
			} else {
				b[i+j] = c
			}
		}
		i += run
	}
	return b
}

func params() omaha.Params {
	return omaha.Params{AppID: appID, Version: "1.0.0", Track: "stable", MachineID: "4c0ffee0000000000000000000000001", BootID: "b1", Board: "amd64-usr"}
}

// installOffer is the update path the agent is to run: events,
// download, payload, install.
func installOffer(ctx context.Context, t testing.TB, c *omaha.Client, f *fetch.Fetcher, disk string, keys []*rsa.PublicKey) (gpt.Result, error) {
	t.Helper()
	p := params()
	offer, err := c.Check(ctx, p)
	if err != nil {
		return gpt.Result{}, err
	}
	fail := func(err error) (gpt.Result, error) {
		if eerr := c.Event(ctx, p, omaha.EventFailed(update.ErrorCode(err))); eerr != nil {
			t.Errorf("event: %v", eerr)
		}
		return gpt.Result{}, err
	}
	if err := c.Event(ctx, p, omaha.EventDownloadStarted()); err != nil {
		t.Fatal(err)
	}
	d, err := f.Open(ctx, fetch.Target{URL: offer.URLs[0], Size: offer.Size, SHA256: offer.SHA256, SHA1: offer.SHA1})
	if err != nil {
		return fail(err)
	}
	defer d.Close()
	img, err := update.NewImage(d, offer.Size, offer.SHA256, update.FormatAuto, keys)
	if err != nil {
		return fail(err)
	}
	res, err := gpt.Install(ctx, gpt.Options{Target: gpt.Target{Disk: disk, Booted: "USR-A"}, Image: img.Reader, Size: img.Size, SHA256: img.SHA256})
	if err != nil {
		return fail(err)
	}
	for _, ev := range []omaha.Event{omaha.EventDownloaded(), omaha.EventInstalled()} {
		if err := c.Event(ctx, p, ev); err != nil {
			t.Fatal(err)
		}
	}
	return res, nil
}

// An offered, signed full payload goes from the Omaha server into the
// passive slot in one stream, across a dropped connection, and the slot
// holds the raw image byte for byte; no temporary file is made.
func TestOmahaPayloadInstalledIntoPassiveSlot(t *testing.T) {
	disk := newDisk(t)
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	raw := osImage(3<<20+1234, 1)
	// One small xz chunk: the pure-Go xz coder is slow under -race.
	ops := make([]payload.OpType, 30)
	ops[3] = payload.OpReplaceXZ
	pl, err := payloadtest.Build(raw, payloadtest.Options{Keys: []*rsa.PrivateKey{keyA()}, ChunkSize: 128 << 10, Ops: ops})
	if err != nil {
		t.Fatal(err)
	}
	srv := omahatest.New(t, appID)
	srv.Offer(omahatest.Package{Version: "2.0.0", Data: pl})
	srv.CutDownloads(int64(len(pl) / 3))
	c, err := omaha.NewClient(srv.URL, srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	var last fetch.Progress
	f := &fetch.Fetcher{HTTP: srv.Client(), Backoff: func(int) time.Duration { return 0 }, Progress: func(p fetch.Progress) { last = p }}

	res, err := installOffer(t.Context(), t, c, f, disk, []*rsa.PublicKey{&keyA().PublicKey})
	if err != nil {
		t.Fatal(err)
	}
	if res.Bytes != int64(len(raw)) || res.Verified != "sha256" {
		t.Fatalf("result %+v", res)
	}
	if got := partition(t, disk, len(raw)); !bytes.Equal(got, raw) {
		t.Fatal("USR-B does not hold the image")
	}
	if p, tries, s := prio(t, disk, 4); p < 1 || tries != 1 || s != 0 {
		t.Fatalf("USR-B priority %d tries %d successful %d; want it to boot next once", p, tries, s)
	}
	if last.Done != int64(len(pl)) || last.Resumes != 1 {
		t.Fatalf("progress %+v, want %d bytes after one resume", last, len(pl))
	}
	dl := srv.Downloads()
	if len(dl) != 2 || dl[1].Get("Range") != fmt.Sprintf("bytes=%d-", len(pl)/3) || dl[1].Get("If-Range") == "" {
		t.Fatalf("downloads %v", dl)
	}
	want := []omaha.Event{omaha.EventDownloadStarted(), omaha.EventDownloaded(), omaha.EventInstalled()}
	if got := srv.Events(params().MachineID); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
		t.Fatalf("temporary files: %v", ents)
	}
}

// Failures end in an install error, a passive slot that does not boot, and
// a 3/0 event with update_engine's code.
func TestFailedUpdateReported(t *testing.T) {
	disk := newDisk(t)
	raw := osImage(2<<20, 2)
	signed := func(k *rsa.PrivateKey) []byte {
		pl, err := payloadtest.Build(raw, payloadtest.Options{Keys: []*rsa.PrivateKey{k}, ChunkSize: 1 << 20})
		if err != nil {
			t.Fatal(err)
		}
		return pl
	}
	good := signed(keyA())
	delta, err := payloadtest.Build(raw, payloadtest.Options{Keys: []*rsa.PrivateKey{keyA()}, ChunkSize: 1 << 20,
		Mutate: func(m *payload.Manifest) { m.PartitionOperations[1].Type = payload.OpSourceCopy }})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		pkg  omahatest.Package
		cuts []int64
		want error
		code omaha.ErrorCode
	}{
		{"wrong hash from the server", omahatest.Package{Data: good, WrongSHA256: true}, nil, fetch.ErrHashMismatch, omaha.CodePayloadHashMismatchError},
		{"signed by another key", omahatest.Package{Data: signed(keyB())}, nil, payload.ErrBadSignature, omaha.CodePayloadPubKeyVerificationError},
		{"delta payload", omahatest.Package{Data: delta}, nil, payload.ErrDeltaUnsupported, omaha.CodeDownloadOperationExecution},
		{"download keeps dropping", omahatest.Package{Data: good}, []int64{100_000, 0, 0}, fetch.ErrInterrupted, omaha.CodeDownloadTransferError},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			srv := omahatest.New(t, appID)
			c.pkg.Version = "2.0.0"
			srv.Offer(c.pkg)
			srv.CutDownloads(c.cuts...)
			cl, err := omaha.NewClient(srv.URL, srv.Client())
			if err != nil {
				t.Fatal(err)
			}
			f := &fetch.Fetcher{HTTP: srv.Client(), MaxRetries: 2, Backoff: func(int) time.Duration { return 0 }}
			_, err = installOffer(t.Context(), t, cl, f, disk, []*rsa.PublicKey{&keyA().PublicKey})
			if !errors.Is(err, c.want) {
				t.Fatalf("%v, want %v", err, c.want)
			}
			if p, _, _ := prio(t, disk, 4); p != 0 {
				t.Fatalf("USR-B has priority %d after a failed install", p)
			}
			if p, _, s := prio(t, disk, 3); p != 1 || s != 1 {
				t.Fatalf("USR-A priority %d successful %d; the booted slot must stay as it was", p, s)
			}
			ev := srv.Events(params().MachineID)
			if last := ev[len(ev)-1]; last != omaha.EventFailed(c.code) {
				t.Fatalf("last event %v, want %v", last, omaha.EventFailed(c.code))
			}
		})
	}
}

// A raw image named by a signed channel file installs too.
func TestSignedChannelRawImageInstalled(t *testing.T) {
	disk := newDisk(t)
	raw := osImage(3<<20, 3)
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(raw)
	rel, _ := json.Marshal(map[string]any{"version": "3.0.0", "url": "images/3.0.0.img", "size": len(raw), "sha256": hex.EncodeToString(sum[:]), "channel": "stable"})
	env, err := manifest.Sign(priv, rel)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/stable.json":
			w.Write(env)
		case "/images/3.0.0.img":
			http.ServeContent(w, r, "img", time.Time{}, bytes.NewReader(raw))
		default:
			http.NotFound(w, r)
		}
	}))
	defer ts.Close()

	ctx := t.Context()
	r, err := manifest.Fetch(ctx, ts.Client(), ts.URL+"/stable.json", manifest.Options{Keys: []ed25519.PublicKey{pub}, Channel: "stable"})
	if err != nil {
		t.Fatal(err)
	}
	f := &fetch.Fetcher{HTTP: ts.Client()}
	d, err := f.Open(ctx, fetch.Target{URL: r.URL, Size: r.Size, SHA256: r.SHA256Bytes()})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	img, err := update.NewImage(d, r.Size, r.SHA256Bytes(), update.FormatRaw, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := gpt.Install(ctx, gpt.Options{Target: gpt.Target{Disk: disk, Booted: "USR-A"}, Image: img.Reader, Size: img.Size, SHA256: img.SHA256})
	if err != nil {
		t.Fatal(err)
	}
	if res.SHA256 != r.SHA256 || !bytes.Equal(partition(t, disk, len(raw)), raw) {
		t.Fatalf("result %+v; USR-B differs", res)
	}
}

func TestErrorCode(t *testing.T) {
	cases := []struct {
		err  error
		want omaha.ErrorCode
	}{
		{fmt.Errorf("install into USR-B: read image: %w", fmt.Errorf("x: %w", fetch.ErrHashMismatch)), 10},
		{fetch.ErrSizeMismatch, 11},
		{fmt.Errorf("%w", payload.ErrBadSignature), 18},
		{payload.ErrNotPayload, 21},
		{payload.ErrCorrupt, 29},
		{fmt.Errorf("%w: %w", gpt.ErrTruncated, io.ErrUnexpectedEOF), 9},
		{gpt.ErrChecksumMismatch, 15},
		{omaha.ErrInvalidResponse, 34},
		{context.Canceled, 1},
		{nil, 0},
	}
	for _, c := range cases {
		if got := update.ErrorCode(c.err); got != c.want {
			t.Errorf("ErrorCode(%v) = %d, want %d", c.err, got, c.want)
		}
	}
}
