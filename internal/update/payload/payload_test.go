package payload_test

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"hash/crc32"
	"io"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/offpeak/offpeak/internal/update/payload"
	"github.com/offpeak/offpeak/internal/update/payload/payloadtest"
)

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

// image returns n bytes that compress somewhat: runs of a pattern mixed
// with noise, like a file system image.
func image(n int, seed uint64) []byte {
	r := mrand.New(mrand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := 0; i < n; {
		run := min(n-i, 1+r.IntN(3000))
		if r.IntN(2) == 0 {
			for j := range run {
				b[i+j] = byte(r.Uint32())
			}
		} else {
			c := byte(r.Uint32())
			for j := range run {
				b[i+j] = c
			}
		}
		i += run
	}
	return b
}

func needBzip2(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("bzip2"); err != nil {
		t.Skip("bzip2 not installed (Debian package bzip2); CI installs it")
	}
}

func build(t testing.TB, img []byte, o payloadtest.Options) []byte {
	t.Helper()
	p, err := payloadtest.Build(img, o)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func apply(p []byte, o payload.Options) ([]byte, error) {
	r, err := payload.Open(bytes.NewReader(p), o)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(r)
}

func TestFullPayloadInstallsByteIdentical(t *testing.T) {
	needBzip2(t)
	kernel := image(10_000, 9)
	cases := []struct {
		name string
		size int
		ops  []payload.OpType
		kern []byte
	}{
		{"replace", 5 * 64 << 10, []payload.OpType{payload.OpReplace}, nil},
		{"replace_bz", 3*64<<10 + 100, []payload.OpType{payload.OpReplaceBZ}, nil},
		{"replace_xz", 2*64<<10 + 4096, []payload.OpType{payload.OpReplaceXZ}, nil},
		{"mixed with kernel", 7*64<<10 + 12345, []payload.OpType{payload.OpReplace, payload.OpReplaceBZ, payload.OpReplaceXZ}, kernel},
		{"smaller than a block", 1000, []payload.OpType{payload.OpReplaceXZ}, nil},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			img := image(c.size, uint64(i))
			p := build(t, img, payloadtest.Options{Keys: []*rsa.PrivateKey{keyA()}, Ops: c.ops, Kernel: c.kern})
			var kout bytes.Buffer
			var kinfo payload.ProcedureInfo
			r, err := payload.Open(bytes.NewReader(p), payload.Options{
				PublicKeys: []*rsa.PublicKey{&keyA().PublicKey},
				Procedure: func(pi payload.ProcedureInfo) (io.Writer, error) {
					kinfo = pi
					return &kout, nil
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(img)
			if r.ImageSize() != int64(len(img)) || !bytes.Equal(r.ImageSHA256(), sum[:]) {
				t.Fatalf("manifest announces %d bytes %x, image is %d bytes %x", r.ImageSize(), r.ImageSHA256(), len(img), sum)
			}
			// Read in odd sizes, as a consumer with its own buffers does.
			got, err := io.ReadAll(io.LimitReader(r, 1<<40))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, img) {
				t.Fatalf("image differs: got %d bytes, want %d", len(got), len(img))
			}
			if c.kern != nil {
				if !bytes.Equal(kout.Bytes(), c.kern) || kinfo.Type != payload.ProcedureKernel || kinfo.Size != int64(len(c.kern)) {
					t.Fatalf("kernel: got %d bytes (%v, size %d), want %d", kout.Len(), kinfo.Type, kinfo.Size, len(c.kern))
				}
			}
			if len(r.Signatures()) != 1 || r.Signatures()[0].Version != 2 {
				t.Fatalf("signatures %+v, want one of version 2", r.Signatures())
			}
		})
	}
}

// The signature update_engine's signer makes with openssl is the one
// verified: same digest, same padding.
func TestOpenSSLSignedPayloadAccepted(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed; CI installs it")
	}
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "key.pem")
	der, err := x509.MarshalPKCS8PrivateKey(keyA())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	sign := func(digest []byte) ([][]byte, error) {
		in := filepath.Join(dir, "hash")
		if err := os.WriteFile(in, digest, 0o600); err != nil {
			return nil, err
		}
		out := filepath.Join(dir, "sig")
		// The command update_engine's PayloadSigner::SignHash runs.
		cmd := exec.Command("openssl", "pkeyutl", "-sign", "-pkeyopt", "digest:sha256", "-pkeyopt", "rsa_padding_mode:pkcs1",
			"-inkey", keyPath, "-in", in, "-out", out)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("openssl: %v\n%s", err, b)
		}
		s, err := os.ReadFile(out)
		return [][]byte{s}, err
	}
	img := image(200_000, 3)
	p := build(t, img, payloadtest.Options{Sign: sign, SigSizes: []int{keyA().Size()}})
	got, err := apply(p, payload.Options{PublicKeys: []*rsa.PublicKey{&keyA().PublicKey}})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, img) {
		t.Fatal("image differs")
	}

	// And the payload key as update_engine ships it (PEM PUBLIC KEY from
	// openssl) parses.
	pubPath := filepath.Join(dir, "pub.pem")
	if b, err := exec.Command("openssl", "pkey", "-in", keyPath, "-pubout", "-out", pubPath).CombinedOutput(); err != nil {
		t.Fatalf("openssl: %v\n%s", err, b)
	}
	pemBytes, err := os.ReadFile(pubPath)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := payload.ParsePublicKey(pemBytes)
	if err != nil {
		t.Fatal(err)
	}
	if !pub.Equal(&keyA().PublicKey) {
		t.Fatal("parsed key differs")
	}
}

func TestSignatureRefused(t *testing.T) {
	img := image(150_000, 4)
	pubA := []*rsa.PublicKey{&keyA().PublicKey}
	cases := []struct {
		name string
		o    payloadtest.Options
		keys []*rsa.PublicKey
		want error
	}{
		{"another key", payloadtest.Options{Keys: []*rsa.PrivateKey{keyB()}}, pubA, payload.ErrBadSignature},
		{"unsigned", payloadtest.Options{}, pubA, payload.ErrBadSignature},
		{"no key configured", payloadtest.Options{Keys: []*rsa.PrivateKey{keyA()}}, nil, payload.ErrNoKey},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := build(t, img, c.o)
			got, err := apply(p, payload.Options{PublicKeys: c.keys})
			if !errors.Is(err, c.want) {
				t.Fatalf("got %d bytes, error %v; want %v", len(got), err, c.want)
			}
		})
	}
	t.Run("either of two signatures", func(t *testing.T) {
		p := build(t, img, payloadtest.Options{Keys: []*rsa.PrivateKey{keyB(), keyA()}})
		for _, k := range []*rsa.PrivateKey{keyA(), keyB()} {
			if _, err := apply(p, payload.Options{PublicKeys: []*rsa.PublicKey{&k.PublicKey}}); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// Every truncation and every flipped byte is refused; none yields io.EOF.
func TestDamagedPayloadRefused(t *testing.T) {
	img := image(2*64<<10+777, 5)
	p := build(t, img, payloadtest.Options{Keys: []*rsa.PrivateKey{keyA()}, Ops: []payload.OpType{payload.OpReplace, payload.OpReplaceXZ}})
	opts := payload.Options{PublicKeys: []*rsa.PublicKey{&keyA().PublicKey}}
	if _, err := apply(p, opts); err != nil {
		t.Fatalf("undamaged: %v", err)
	}
	r := mrand.New(mrand.NewPCG(1, 2))
	cuts := []int{0, 3, 4, 19, 20, 21, len(p) / 3, len(p) / 2, len(p) - 300, len(p) - 1}
	for _, n := range cuts {
		_, err := apply(p[:n], opts)
		if err == nil {
			t.Fatalf("truncated to %d of %d bytes: accepted", n, len(p))
		}
		if n >= 4 && !errors.Is(err, payload.ErrTruncated) {
			t.Errorf("truncated to %d of %d bytes: %v, want ErrTruncated", n, len(p), err)
		}
	}
	// The signature blob itself is outside what it signs (a flipped
	// version number there still verifies); the download's own SHA-256
	// covers it. Every byte it signs is flipped at random here.
	signed := len(p) - keyA().Size() - 16
	for range 30 {
		i := r.IntN(signed)
		d := bytes.Clone(p)
		d[i] ^= byte(1 + r.IntN(255))
		if _, err := apply(d, opts); err == nil {
			t.Fatalf("byte %d of %d flipped: accepted", i, len(p))
		}
	}
	// A flip in a data blob is caught by the operation's hash, in the
	// signature by the signature check.
	d := bytes.Clone(p)
	d[len(p)-2*keyA().Size()] ^= 1
	if _, err := apply(d, opts); !errors.Is(err, payload.ErrCorrupt) {
		t.Errorf("data byte flipped: %v, want ErrCorrupt", err)
	}
	d = bytes.Clone(p)
	d[len(p)-10] ^= 1
	if _, err := apply(d, opts); !errors.Is(err, payload.ErrBadSignature) {
		t.Errorf("signature byte flipped: %v, want ErrBadSignature", err)
	}
	if _, err := apply(append(bytes.Clone(p), 0), opts); !errors.Is(err, payload.ErrCorrupt) {
		t.Errorf("trailing byte: %v, want ErrCorrupt", err)
	}
}

func TestRefusedBeforeAnyOutput(t *testing.T) {
	img := image(3*64<<10, 6)
	keys := []*rsa.PrivateKey{keyA()}
	cases := []struct {
		name   string
		mutate func(*payload.Manifest)
		o      payloadtest.Options
		want   error
	}{
		{"MOVE", func(m *payload.Manifest) {
			m.PartitionOperations[1] = payload.Operation{Type: payload.OpMove,
				SrcExtents: []payload.Extent{{StartBlock: 0, NumBlocks: 16}}, DstExtents: m.PartitionOperations[1].DstExtents}
		}, payloadtest.Options{}, payload.ErrDeltaUnsupported},
		{"BSDIFF", func(m *payload.Manifest) { m.PartitionOperations[0].Type = payload.OpBsdiff }, payloadtest.Options{}, payload.ErrDeltaUnsupported},
		{"SOURCE_COPY", func(m *payload.Manifest) { m.PartitionOperations[2].Type = payload.OpSourceCopy }, payloadtest.Options{}, payload.ErrDeltaUnsupported},
		{"PUFFDIFF", func(m *payload.Manifest) { m.PartitionOperations[2].Type = payload.OpPuffdiff }, payloadtest.Options{}, payload.ErrDeltaUnsupported},
		{"old partition info", func(m *payload.Manifest) {
			m.OldPartitionInfo = &payload.Info{Size: 1 << 20, Hash: make([]byte, 32)}
		}, payloadtest.Options{}, payload.ErrDeltaUnsupported},
		{"REPLACE with source extents", func(m *payload.Manifest) {
			m.PartitionOperations[0].SrcExtents = []payload.Extent{{StartBlock: 3, NumBlocks: 1}}
		}, payloadtest.Options{}, payload.ErrDeltaUnsupported},
		{"ZERO", func(m *payload.Manifest) { m.PartitionOperations[1].Type = payload.OpZero }, payloadtest.Options{}, payload.ErrUnsupportedOperation},
		{"unknown type", func(m *payload.Manifest) { m.PartitionOperations[1].Type = 77 }, payloadtest.Options{}, payload.ErrUnsupportedOperation},
		{"no new partition info", func(m *payload.Manifest) { m.NewPartitionInfo = nil }, payloadtest.Options{}, payload.ErrCorrupt},
		{"data out of order", func(m *payload.Manifest) {
			ops := m.PartitionOperations
			ops[0], ops[1] = ops[1], ops[0]
		}, payloadtest.Options{}, payload.ErrCorrupt},
		{"missing operation hash", func(m *payload.Manifest) { m.PartitionOperations[1].DataSHA256 = nil }, payloadtest.Options{}, payload.ErrCorrupt},
		{"signature elsewhere", func(m *payload.Manifest) { m.SignaturesOffset-- }, payloadtest.Options{}, payload.ErrCorrupt},
		{"version 2", nil, payloadtest.Options{Version: 2}, payload.ErrUnsupportedVersion},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := c.o
			o.Keys, o.Mutate = keys, c.mutate
			p := build(t, img, o)
			r, err := payload.Open(bytes.NewReader(p), payload.Options{PublicKeys: []*rsa.PublicKey{&keyA().PublicKey}})
			if !errors.Is(err, c.want) {
				t.Fatalf("Open: %v, want %v", err, c.want)
			}
			if r != nil {
				t.Fatal("a Reader with the error")
			}
		})
	}
	if _, err := payload.Open(bytes.NewReader([]byte("PK\x03\x04 not a payload at all")), payload.Options{PublicKeys: []*rsa.PublicKey{&keyA().PublicKey}}); !errors.Is(err, payload.ErrNotPayload) {
		t.Errorf("zip file: %v, want ErrNotPayload", err)
	}
}

// A signed manifest whose operations or partition info lie is refused
// while reading, by the checks the stream allows.
func TestInconsistentSignedManifestRefused(t *testing.T) {
	img := image(3*64<<10+500, 7)
	img[len(img)-1], img[len(img)-60] = 0xff, 0xaa // data, not padding, past the shrunk size
	cases := []struct {
		name   string
		mutate func(*payload.Manifest)
		want   error
	}{
		{"partition hash", func(m *payload.Manifest) { m.NewPartitionInfo.Hash[0] ^= 1 }, payload.ErrCorrupt},
		{"partition larger than the operations write", func(m *payload.Manifest) { m.NewPartitionInfo.Size += 1 << 20 }, payload.ErrCorrupt},
		{"extents smaller than the data", func(m *payload.Manifest) { m.PartitionOperations[0].DstExtents[0].NumBlocks = 2 }, payload.ErrCorrupt},
		{"blocks out of order", func(m *payload.Manifest) {
			m.PartitionOperations[1].DstExtents[0].StartBlock += 16
		}, payload.ErrUnsupportedOperation},
		{"sparse hole", func(m *payload.Manifest) { m.PartitionOperations[2].DstExtents[0].StartBlock = payload.SparseHole }, payload.ErrUnsupportedOperation},
		{"data past the partition size", func(m *payload.Manifest) { m.NewPartitionInfo.Size -= 100 }, payload.ErrCorrupt},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := build(t, img, payloadtest.Options{Keys: []*rsa.PrivateKey{keyA()}, Mutate: c.mutate})
			got, err := apply(p, payload.Options{PublicKeys: []*rsa.PublicKey{&keyA().PublicKey}})
			if !errors.Is(err, c.want) {
				t.Fatalf("got %d bytes, %v; want %v", len(got), err, c.want)
			}
		})
	}
}

// An error of the source (a download that failed its hash, a cancelled
// context) is the Reader's error, wrapped.
func TestSourceErrorPassedThrough(t *testing.T) {
	img := image(100_000, 8)
	p := build(t, img, payloadtest.Options{Keys: []*rsa.PrivateKey{keyA()}})
	errSrc := errors.New("source says no")
	for _, at := range []int{10, 5000, len(p)} {
		src := io.MultiReader(bytes.NewReader(p[:at]), iotestErr{errSrc})
		r, err := payload.Open(src, payload.Options{PublicKeys: []*rsa.PublicKey{&keyA().PublicKey}})
		if err == nil {
			_, err = io.ReadAll(r)
		}
		if !errors.Is(err, errSrc) {
			t.Fatalf("source failing after %d bytes: %v", at, err)
		}
	}
}

type iotestErr struct{ err error }

func (e iotestErr) Read([]byte) (int, error) { return 0, e.err }

func TestParsePublicKeyRefusesSmallAndOtherKeys(t *testing.T) {
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&small.PublicKey)
	if _, err := payload.ParsePublicKey(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})); err == nil {
		t.Error("1024-bit key accepted")
	}
	if _, err := payload.ParsePublicKey([]byte("not pem")); err == nil {
		t.Error("garbage accepted")
	}
	pkcs1 := x509.MarshalPKCS1PublicKey(&keyA().PublicKey)
	if _, err := payload.ParsePublicKey(pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: pkcs1})); err != nil {
		t.Error(err)
	}
}

// An xz blob whose header asks for a 2 GiB dictionary is refused before
// the decoder allocates it: the manifest vouching for the blob is only
// verified at the end of the payload.
func TestHugeXZDictionaryRefused(t *testing.T) {
	img := image(64<<10, 13)
	bigDict := func(i int, blob []byte) []byte {
		// The block header follows the 12-byte stream header: size,
		// flags, then the LZMA2 filter (0x21), its property size (1) and
		// the dictionary code, which 38 makes 2 GiB.
		b := bytes.Clone(blob)
		hsize := (int(b[12]) + 1) * 4
		at := bytes.Index(b[12:12+hsize], []byte{0x21, 0x01})
		if at < 0 {
			t.Fatal("no LZMA2 filter in the block header")
		}
		b[12+at+2] = 38
		crc := crc32.ChecksumIEEE(b[12 : 12+hsize-4])
		binary.LittleEndian.PutUint32(b[12+hsize-4:], crc)
		return b
	}
	p := build(t, img, payloadtest.Options{Keys: []*rsa.PrivateKey{keyA()}, Ops: []payload.OpType{payload.OpReplaceXZ}, Blob: bigDict})
	_, err := apply(p, payload.Options{PublicKeys: []*rsa.PublicKey{&keyA().PublicKey}})
	if !errors.Is(err, payload.ErrCorrupt) {
		t.Fatalf("%v, want ErrCorrupt", err)
	}
}
