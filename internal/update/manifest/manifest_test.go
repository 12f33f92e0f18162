package manifest_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/offpeak/offpeak/internal/update/manifest"
)

const sha = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

func keys(t testing.TB) (ed25519.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

func release(fields map[string]any) []byte {
	r := map[string]any{"version": "4152.2.0", "url": "https://images.example.net/stable/4152.2.0.img", "size": 1 << 30, "sha256": sha, "channel": "stable"}
	for k, v := range fields {
		if v == nil {
			delete(r, k)
		} else {
			r[k] = v
		}
	}
	b, _ := json.Marshal(r)
	return b
}

func sign(t testing.TB, priv ed25519.PrivateKey, payload []byte) []byte {
	t.Helper()
	env, err := manifest.Sign(priv, payload)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

func TestGoodSignatureAccepted(t *testing.T) {
	pub, priv := keys(t)
	other, _ := keys(t)
	when := "2026-03-01T12:00:00Z"
	env := sign(t, priv, release(map[string]any{"channel": "stable", "released_at": when, "image_format": "crau", "sha256": strings.ToUpper(sha)}))
	r, err := manifest.Verify(env, manifest.Options{Keys: []ed25519.PublicKey{other, pub}, Channel: "stable"})
	if err != nil {
		t.Fatal(err)
	}
	if r.Version != "4152.2.0" || r.Size != 1<<30 || r.SHA256 != sha || r.ImageFormat != manifest.FormatCrAU ||
		r.Channel != "stable" || r.ReleasedAt == nil || !r.ReleasedAt.Equal(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)) ||
		len(r.SHA256Bytes()) != 32 {
		t.Fatalf("release %+v", r)
	}
	// Defaults and a relative URL.
	base, _ := url.Parse("https://images.example.net/channels/stable.json")
	r, err = manifest.Verify(sign(t, priv, release(map[string]any{"url": "../img/4152.2.0.img"})), manifest.Options{Keys: []ed25519.PublicKey{pub}, Base: base})
	if err != nil {
		t.Fatal(err)
	}
	if r.URL != "https://images.example.net/img/4152.2.0.img" || r.ImageFormat != manifest.FormatRaw {
		t.Fatalf("release %+v", r)
	}
}

func TestBadSignatureRefused(t *testing.T) {
	pub, priv := keys(t)
	_, otherPriv := keys(t)
	payload := release(nil)
	good := sign(t, priv, payload)
	var env map[string]string
	if err := json.Unmarshal(good, &env); err != nil {
		t.Fatal(err)
	}
	rewrap := func(p []byte, sig string) []byte {
		b, _ := json.Marshal(map[string]string{"payload": base64.StdEncoding.EncodeToString(p), "signature": sig})
		return b
	}
	tampered := bytes.Replace(payload, []byte(sha), []byte(strings.Repeat("0", 64)), 1)
	sigBytes, _ := base64.StdEncoding.DecodeString(env["signature"])
	sigBytes[0] ^= 1
	cases := []struct {
		name string
		data []byte
		want error
	}{
		{"another key", sign(t, otherPriv, payload), manifest.ErrBadSignature},
		{"tampered payload", rewrap(tampered, env["signature"]), manifest.ErrBadSignature},
		{"payload with a space added", rewrap(append(bytes.Clone(payload), ' '), env["signature"]), manifest.ErrBadSignature},
		{"flipped signature bit", rewrap(payload, base64.StdEncoding.EncodeToString(sigBytes)), manifest.ErrBadSignature},
		{"short signature", rewrap(payload, "AAAA"), manifest.ErrBadSignature},
		{"no signature", []byte(`{"payload":"` + env["payload"] + `"}`), manifest.ErrInvalid},
		{"unsigned plain release", payload, manifest.ErrInvalid},
		{"extra envelope field", []byte(`{"payload":"` + env["payload"] + `","signature":"` + env["signature"] + `","key":"x"}`), manifest.ErrInvalid},
		{"trailing data", append(bytes.Clone(good), []byte(`{}`)...), manifest.ErrInvalid},
		{"payload not base64", []byte(`{"payload":"!!","signature":"` + env["signature"] + `"}`), manifest.ErrInvalid},
		{"too large", append(bytes.Clone(good), bytes.Repeat([]byte(" "), manifest.DefaultMaxSize)...), manifest.ErrInvalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := manifest.Verify(c.data, manifest.Options{Keys: []ed25519.PublicKey{pub}})
			if !errors.Is(err, c.want) {
				t.Fatalf("%+v, %v; want %v", r, err, c.want)
			}
		})
	}
	if _, err := manifest.Verify(good, manifest.Options{}); !errors.Is(err, manifest.ErrNoKey) {
		t.Fatalf("no key: %v", err)
	}
}

// Fields are judged only after the signature verified, and a signed but
// unusable release is refused all the same.
func TestSignedReleaseChecked(t *testing.T) {
	pub, priv := keys(t)
	cases := []struct {
		name   string
		fields map[string]any
		want   error
	}{
		{"no version", map[string]any{"version": nil}, manifest.ErrInvalid},
		{"unprintable version", map[string]any{"version": "1.0\x1b[2J"}, manifest.ErrInvalid},
		{"no url", map[string]any{"url": nil}, manifest.ErrInvalid},
		{"relative url without base", map[string]any{"url": "img.raw"}, manifest.ErrInvalid},
		{"file url", map[string]any{"url": "file:///etc/shadow"}, manifest.ErrInvalid},
		{"size 0", map[string]any{"size": 0}, manifest.ErrInvalid},
		{"size as text", map[string]any{"size": "12"}, manifest.ErrInvalid},
		{"short sha256", map[string]any{"sha256": sha[:60]}, manifest.ErrInvalid},
		{"unknown field", map[string]any{"mirror": "https://x/"}, manifest.ErrInvalid},
		{"unknown image format", map[string]any{"image_format": "qcow2"}, manifest.ErrInvalid},
		{"bad time", map[string]any{"released_at": "yesterday"}, manifest.ErrInvalid},
		{"other channel", map[string]any{"channel": "beta"}, manifest.ErrWrongChannel},
		{"no channel when one is expected", map[string]any{"channel": nil}, manifest.ErrWrongChannel},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := manifest.Verify(sign(t, priv, release(c.fields)), manifest.Options{Keys: []ed25519.PublicKey{pub}, Channel: "stable"})
			if !errors.Is(err, c.want) {
				t.Fatalf("%v, want %v", err, c.want)
			}
		})
	}
}

func TestFetch(t *testing.T) {
	pub, priv := keys(t)
	env := sign(t, priv, release(map[string]any{"url": "4152.2.0.img"}))
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/stable/channel.json":
			w.Write(env)
		case "/huge.json":
			w.Write(bytes.Repeat([]byte("x"), 2*manifest.DefaultMaxSize))
		default:
			http.NotFound(w, r)
		}
	}))
	defer ts.Close()
	o := manifest.Options{Keys: []ed25519.PublicKey{pub}}
	r, err := manifest.Fetch(t.Context(), ts.Client(), ts.URL+"/stable/channel.json", o)
	if err != nil {
		t.Fatal(err)
	}
	if r.URL != ts.URL+"/stable/4152.2.0.img" {
		t.Fatalf("url %q", r.URL)
	}
	if _, err := manifest.Fetch(t.Context(), ts.Client(), ts.URL+"/nope.json", o); !errors.Is(err, manifest.ErrHTTPStatus) {
		t.Fatalf("404: %v", err)
	}
	if _, err := manifest.Fetch(t.Context(), ts.Client(), ts.URL+"/huge.json", o); !errors.Is(err, manifest.ErrInvalid) {
		t.Fatalf("huge: %v", err)
	}
	if _, err := manifest.Fetch(t.Context(), ts.Client(), "ftp://x/c.json", o); !errors.Is(err, manifest.ErrInvalid) {
		t.Fatalf("ftp: %v", err)
	}
}

// The OpenSSL commands in the package documentation make a channel file
// Verify accepts, with the public key as openssl writes it.
func TestOpenSSLSignedChannel(t *testing.T) {
	for _, tool := range []string{"openssl", "base64", "sh"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed; CI installs it", tool)
		}
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "release.json"), release(map[string]any{"channel": "stable"}), 0o644); err != nil {
		t.Fatal(err)
	}
	script := `set -e
openssl genpkey -algorithm ed25519 -out channel.key
openssl pkey -in channel.key -pubout -out channel.pub
openssl pkeyutl -sign -rawin -inkey channel.key -in release.json -out release.sig
printf '{"payload":"%s","signature":"%s"}\n' "$(base64 -w0 release.json)" "$(base64 -w0 release.sig)" > stable.json
`
	cmd := exec.Command("sh", "-c", script)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	pemPub, err := os.ReadFile(filepath.Join(dir, "channel.pub"))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := manifest.ParsePublicKey(pemPub)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "stable.json"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := manifest.Verify(data, manifest.Options{Keys: []ed25519.PublicKey{pub}, Channel: "stable"})
	if err != nil {
		t.Fatal(err)
	}
	if r.Version != "4152.2.0" {
		t.Fatalf("release %+v", r)
	}
}

func TestParsePublicKey(t *testing.T) {
	pub, _ := keys(t)
	der, _ := x509.MarshalPKIXPublicKey(pub)
	forms := map[string][]byte{
		"raw":    pub,
		"base64": []byte(base64.StdEncoding.EncodeToString(pub) + "\n"),
		"pem":    pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}),
	}
	for name, b := range forms {
		k, err := manifest.ParsePublicKey(b)
		if err != nil || !k.Equal(pub) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := manifest.ParsePublicKey([]byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")); err == nil {
		t.Error("private key PEM accepted as a public key")
	}
}

func FuzzVerify(f *testing.F) {
	pub, priv := keys(f)
	f.Add(sign(f, priv, release(nil)))
	f.Add([]byte(`{"payload":"e30=","signature":""}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := manifest.Verify(b, manifest.Options{Keys: []ed25519.PublicKey{pub}})
		if err == nil && (r.Version == "" || r.Size <= 0 || len(r.SHA256Bytes()) != 32) {
			t.Fatalf("accepted an unusable release %+v", r)
		}
	})
}
