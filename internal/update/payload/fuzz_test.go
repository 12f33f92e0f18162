package payload_test

import (
	"bytes"
	"crypto/rsa"
	"io"
	"testing"

	"github.com/offpeak/offpeak/internal/update/payload"
	"github.com/offpeak/offpeak/internal/update/payload/payloadtest"
)

// FuzzParseManifest: any bytes give a manifest or an error, never a panic.
func FuzzParseManifest(f *testing.F) {
	p := build(f, image(70_000, 11), payloadtest.Options{Keys: []*rsa.PrivateKey{keyA()}, Kernel: []byte("kernel")})
	f.Add(p[payload.HeaderSize:])
	f.Add([]byte{0x0a, 0x02, 0x08})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := payload.ParseManifest(b)
		if err == nil && m == nil {
			t.Fatal("nil manifest without error")
		}
		_, _ = payload.ParseSignatures(b)
	})
}

// FuzzPayload: any stream is refused or, if the fuzzer found a way to make
// it verify, must reproduce a signed image. A payload the test key did not
// sign can never pass.
func FuzzPayload(f *testing.F) {
	img := image(3*64<<10+10, 12)
	good := build(f, img, payloadtest.Options{Keys: []*rsa.PrivateKey{keyA()}, Ops: []payload.OpType{payload.OpReplace, payload.OpReplaceXZ}})
	f.Add(good)
	f.Add(good[:200])
	f.Add([]byte("CrAU\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00"))
	small := build(f, []byte("tiny image"), payloadtest.Options{Keys: []*rsa.PrivateKey{keyB()}})
	f.Add(small)
	keys := []*rsa.PublicKey{&keyA().PublicKey}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := payload.Open(bytes.NewReader(b), payload.Options{PublicKeys: keys, MaxManifestSize: 1 << 20, MaxOperationData: 1 << 20})
		if err != nil {
			return
		}
		out, err := io.ReadAll(io.LimitReader(r, 64<<20))
		if err == nil && !bytes.Equal(out, img) {
			t.Fatalf("accepted a payload producing %d bytes that are not the signed image", len(out))
		}
	})
}
