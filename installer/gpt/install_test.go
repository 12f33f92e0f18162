package gpt

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func imageData(n int, seed byte) []byte {
	var s [32]byte
	s[0] = seed
	b := make([]byte, n)
	rand.NewChaCha8(s).Read(b)
	return b
}

func writeImageFile(t *testing.T, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "usr.img")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func sha(data []byte) string {
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])
}

// ddInto writes data at a partition's start, as a reference install would.
func ddInto(t *testing.T, img string, idx int, data []byte) {
	t.Helper()
	off := int64(part(t, img, idx).FirstLBA) * 512
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(data, off); err != nil {
		t.Fatal(err)
	}
}

func partData(t *testing.T, img string, idx int, n int64) []byte {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return readAt(t, f, int64(part(t, img, idx).FirstLBA)*512, n)
}

func TestInstallMatchesCgpt(t *testing.T) {
	tests := []struct {
		name      string
		prep      func(t *testing.T, img string) // on the base image
		booted    string
		passive   int
		size      int
		bufSize   int
		wantCgpt  [][4]int // idx, P, T, S as cgpt add would be called, in order
		wantAfter [2][3]int
	}{
		{name: "A booted at 1, B gets 2", booted: "USR-A", passive: idxB, size: 3<<20 + 123,
			wantCgpt: [][4]int{{idxB, 2, 1, 0}}},
		{name: "small buffers, many chunks", booted: "USR-A", passive: idxB, size: 1<<20 + 7, bufSize: 4096,
			wantCgpt: [][4]int{{idxB, 2, 1, 0}}},
		{name: "image exactly fills the partition", booted: "USR-A", passive: idxB, size: 16 << 20,
			wantCgpt: [][4]int{{idxB, 2, 1, 0}}},
		{name: "B booted at 5, A gets 6",
			prep: func(t *testing.T, img string) {
				cgptAdd(t, img, idxB, 5, 0, 1)
			},
			booted: "USR-B", passive: idxA, size: 2 << 20, wantCgpt: [][4]int{{idxA, 6, 1, 0}}},
		{name: "A at 15 is lowered to 14",
			prep: func(t *testing.T, img string) {
				cgptAdd(t, img, idxA, 15, 0, 1)
			},
			booted: "USR-A", passive: idxB, size: 1 << 20, wantCgpt: [][4]int{{idxA, 14, 0, 1}, {idxB, 15, 1, 0}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			base := newImage(t)
			if tc.prep != nil {
				tc.prep(t, base)
			}
			mine, theirs := copyFile(t, base), copyFile(t, base)
			data := imageData(tc.size, 1)
			res, err := Install(ctxT(t), Options{
				Target:     Target{Disk: mine, Booted: tc.booted},
				ImagePath:  writeImageFile(t, data),
				SHA256:     strings.ToUpper(sha(data)),
				BufferSize: tc.bufSize,
			})
			if err != nil {
				t.Fatal(err)
			}
			ddInto(t, theirs, tc.passive, data)
			for _, c := range tc.wantCgpt {
				cgptAdd(t, theirs, c[0], c[1], c[2], c[3])
			}
			sameFile(t, mine, theirs)
			sgdiskClean(t, mine)
			for _, c := range tc.wantCgpt {
				wantCgpt(t, mine, c[0], c[1], c[2], c[3])
			}
			if res.Bytes != int64(tc.size) || res.SHA256 != sha(data) || res.Verified != "sha256" {
				t.Errorf("result bytes %d sha %s verified %s", res.Bytes, res.SHA256, res.Verified)
			}
			if !res.Staged || res.Passive.Index != tc.passive || res.Next != res.Passive.Label {
				t.Errorf("state after install: staged %v passive %d next %q", res.Staged, res.Passive.Index, res.Next)
			}
		})
	}
}

func TestInstallFromStream(t *testing.T) {
	img := newImage(t)
	data := imageData(2<<20+1, 2)
	// A pipe has no size: the limit is enforced while streaming.
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(writeAllChunks(pw, data, 100_000))
	}()
	res, err := Install(ctxT(t), Options{Target: Target{Disk: img, Booted: LabelA}, Image: pr, SHA256: sha(data)})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(partData(t, img, idxB, int64(len(data))), data) || res.Bytes != int64(len(data)) {
		t.Fatal("partition does not hold the streamed image")
	}
	wantCgpt(t, img, idxB, 2, 1, 0)
}

func writeAllChunks(w io.Writer, data []byte, chunk int) error {
	for len(data) > 0 {
		n := min(chunk, len(data))
		if _, err := w.Write(data[:n]); err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

// failingReader yields data and then err instead of io.EOF.
type failingReader struct {
	r   io.Reader
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, f.err
	}
	return n, err
}

type keys struct {
	pub   ed25519.PublicKey
	priv  ed25519.PrivateKey
	other ed25519.PrivateKey
}

func newKeys(t *testing.T) keys {
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	_, other, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return keys{pub, priv, other}
}

func TestInstallRejectsBadImage(t *testing.T) {
	k := newKeys(t)
	data := imageData(1<<20+5, 3)
	sum := sha(data)
	goodSig := ed25519.Sign(k.priv, SignedMessage(sum))
	tests := []struct {
		name string
		opts func(t *testing.T) Options
		want error
		// untouchedData: the passive partition must be unchanged too (the
		// error is found before anything is written).
		untouchedData bool
	}{
		{name: "bad checksum", want: ErrChecksumMismatch, opts: func(t *testing.T) Options {
			return Options{ImagePath: writeImageFile(t, data), SHA256: sha([]byte("other"))}
		}},
		{name: "signature by another key", want: ErrBadSignature, opts: func(t *testing.T) Options {
			return Options{ImagePath: writeImageFile(t, data), Signature: ed25519.Sign(k.other, SignedMessage(sum)), PublicKey: k.pub}
		}},
		{name: "signature over another image", want: ErrBadSignature, opts: func(t *testing.T) Options {
			return Options{ImagePath: writeImageFile(t, data), Signature: ed25519.Sign(k.priv, SignedMessage(sha(data[1:]))), PublicKey: k.pub}
		}},
		{name: "good checksum, bad signature", want: ErrBadSignature, opts: func(t *testing.T) Options {
			bad := bytes.Clone(goodSig)
			bad[0] ^= 1
			return Options{ImagePath: writeImageFile(t, data), SHA256: sum, Signature: bad, PublicKey: k.pub}
		}},
		{name: "stream cut with unexpected EOF", want: ErrTruncated, opts: func(t *testing.T) Options {
			return Options{Image: &failingReader{bytes.NewReader(data[:len(data)/2]), io.ErrUnexpectedEOF}, SHA256: sum}
		}},
		{name: "stream shorter than its size", want: ErrTruncated, opts: func(t *testing.T) Options {
			return Options{Image: bytes.NewReader(data[:len(data)-1]), Size: int64(len(data)), SHA256: sum}
		}},
		{name: "truncated stream without a size fails the checksum", want: ErrChecksumMismatch, opts: func(t *testing.T) Options {
			return Options{Image: bytes.NewReader(data[:len(data)-1]), SHA256: sum}
		}},
		{name: "empty image", want: ErrTruncated, opts: func(t *testing.T) Options {
			return Options{Image: bytes.NewReader(nil)}
		}},
		{name: "read error", want: os.ErrDeadlineExceeded, opts: func(t *testing.T) Options {
			return Options{Image: &failingReader{bytes.NewReader(data), os.ErrDeadlineExceeded}, SHA256: sum}
		}},
		{name: "file larger than partition", want: ErrImageTooLarge, untouchedData: true, opts: func(t *testing.T) Options {
			return Options{ImagePath: writeImageFile(t, imageData(16<<20+1, 4))}
		}},
		{name: "announced size larger than partition", want: ErrImageTooLarge, untouchedData: true, opts: func(t *testing.T) Options {
			return Options{Image: bytes.NewReader(data), Size: 16<<20 + 512}
		}},
		{name: "stream larger than partition", want: ErrImageTooLarge, opts: func(t *testing.T) Options {
			return Options{Image: io.MultiReader(bytes.NewReader(imageData(16<<20, 5)), strings.NewReader("x"))}
		}},
		{name: "signature without key", want: ErrInvalidArgument, untouchedData: true, opts: func(t *testing.T) Options {
			return Options{ImagePath: writeImageFile(t, data), Signature: goodSig}
		}},
		{name: "malformed checksum", want: ErrInvalidArgument, untouchedData: true, opts: func(t *testing.T) Options {
			return Options{ImagePath: writeImageFile(t, data), SHA256: "abc"}
		}},
		{name: "cancelled", want: context.Canceled, untouchedData: true, opts: func(t *testing.T) Options {
			return Options{ImagePath: writeImageFile(t, data), SHA256: sum}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			img := newImage(t)
			// A marker in the partition after USR-B shows nothing is
			// written past the passive partition's end.
			marker := bytes.Repeat([]byte("ROOT"), 128)
			ddInto(t, img, idxRoot, marker)
			table := tableArea(t, img)
			before := partData(t, img, idxB, 4096)

			o := tc.opts(t)
			o.Target = Target{Disk: img, Booted: LabelA}
			ctx := ctxT(t)
			if tc.want == context.Canceled {
				c, cancel := context.WithCancel(ctx)
				cancel()
				ctx = c
			}
			_, err := Install(ctx, o)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Install = %v, want %v", err, tc.want)
			}
			if !bytes.Equal(tableArea(t, img), table) {
				t.Error("partition table bytes changed")
			}
			if !bytes.Equal(partData(t, img, idxRoot, int64(len(marker))), marker) {
				t.Error("data written past the passive partition")
			}
			if tc.untouchedData && !bytes.Equal(partData(t, img, idxB, 4096), before) {
				t.Error("passive partition written although the error was known up front")
			}
			wantCgpt(t, img, idxB, 0, 0, 0)
			wantCgpt(t, img, idxA, 1, 0, 1)
		})
	}
}

func TestInstallSignatureFormats(t *testing.T) {
	k := newKeys(t)
	data := imageData(300_000, 6)
	sig := ed25519.Sign(k.priv, SignedMessage(sha(data)))
	der, err := x509.MarshalPKIXPublicKey(k.pub)
	if err != nil {
		t.Fatal(err)
	}
	b64 := func(b []byte) []byte { return []byte(base64.StdEncoding.EncodeToString(b) + "\n") }
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	tests := []struct {
		name     string
		pub, sig []byte
		sha      string
		want     string
	}{
		{"raw key, raw signature", k.pub, sig, "", "signature"},
		{"base64 key, base64 signature", b64(k.pub), b64(sig), "", "signature"},
		{"PEM key and checksum", pemKey, sig, sha(data), "sha256+signature"},
		{"base64 DER key", b64(der), b64(sig), "", "signature"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			pubPath, sigPath := filepath.Join(dir, "key.pub"), filepath.Join(dir, "img.sig")
			os.WriteFile(pubPath, tc.pub, 0o644)
			os.WriteFile(sigPath, tc.sig, 0o644)
			pub, err := ReadPublicKey(pubPath)
			if err != nil {
				t.Fatal(err)
			}
			s, err := ReadSignature(sigPath)
			if err != nil {
				t.Fatal(err)
			}
			img := newImage(t)
			res, err := Install(ctxT(t), Options{Target: Target{Disk: img, Booted: LabelA}, ImagePath: writeImageFile(t, data), SHA256: tc.sha, Signature: s, PublicKey: pub})
			if err != nil {
				t.Fatal(err)
			}
			if res.Verified != tc.want {
				t.Errorf("verified %q, want %q", res.Verified, tc.want)
			}
		})
	}
	for _, bad := range [][]byte{[]byte("short"), bytes.Repeat([]byte{1}, 33), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})} {
		if _, err := ParsePublicKey(bad); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("ParsePublicKey(%q) = %v, want ErrInvalidArgument", bad, err)
		}
	}
	if _, err := ParseSignature(sig[:63]); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("63-byte signature: %v", err)
	}
}

// TestSignatureMadeWithOpenSSL follows the recipe in the README.
func TestSignatureMadeWithOpenSSL(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed")
	}
	dir := t.TempDir()
	data := imageData(100_000, 7)
	key, pub, msg, sig := filepath.Join(dir, "key.pem"), filepath.Join(dir, "pub.pem"), filepath.Join(dir, "digest.txt"), filepath.Join(dir, "img.sig")
	run(t, "openssl", "genpkey", "-algorithm", "ed25519", "-out", key)
	run(t, "openssl", "pkey", "-in", key, "-pubout", "-out", pub)
	if err := os.WriteFile(msg, []byte(sha(data)), 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, "openssl", "pkeyutl", "-sign", "-rawin", "-inkey", key, "-in", msg, "-out", sig)
	k, err := ReadPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ReadSignature(sig)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := verify(sha(data), "", s, k); err != nil {
		t.Fatalf("openssl signature: %v", err)
	}
}

func TestInstallRefusesWhenBootedNotGood(t *testing.T) {
	img := newImage(t)
	cgptAdd(t, img, idxA, 1, 1, 0)
	table := tableArea(t, img)
	data := imageData(4096, 8)
	o := Options{Target: Target{Disk: img, Booted: LabelA}, Image: bytes.NewReader(data), SHA256: sha(data)}
	if _, err := Install(ctxT(t), o); !errors.Is(err, ErrBootedNotGood) {
		t.Fatalf("Install = %v, want ErrBootedNotGood", err)
	}
	if !bytes.Equal(tableArea(t, img), table) || bytes.Equal(partData(t, img, idxB, 4096), data) {
		t.Fatal("refused install changed the disk")
	}
	o.Force, o.Image = true, bytes.NewReader(data)
	if _, err := Install(ctxT(t), o); err != nil {
		t.Fatalf("forced install: %v", err)
	}
	wantCgpt(t, img, idxB, 2, 1, 0)
}
