// Package manifest reads a signed static update channel: a small JSON file
// an operator publishes next to the images (any web server or bucket will
// do), naming the current version, where its image is, its size and its
// SHA-256, signed with an ed25519 key whose public half is in the policy.
//
// The file is an envelope
//
//	{"payload": "<base64 of the release JSON>", "signature": "<base64 ed25519 signature of those bytes>"}
//
// so that the signature covers exactly the bytes that are parsed: the
// payload is verified before any of its fields is read. The release JSON
// is
//
//	{"version": "4152.2.0", "url": "flatcar-4152.2.0.img", "size": 1073741824,
//	 "sha256": "<64 hex digits>", "channel": "stable", "image_format": "raw",
//	 "released_at": "2026-03-01T12:00:00Z"}
//
// version, url, size and sha256 are required; url may be relative to the
// channel file's own URL; image_format is "raw" (the default: the image
// itself) or "crau" (a Flatcar update payload); unknown fields are
// refused, so a field a newer signer adds is never silently ignored.
//
// Signing needs nothing from offpeak; with OpenSSL 3:
//
//	openssl genpkey -algorithm ed25519 -out channel.key
//	openssl pkey -in channel.key -pubout -out channel.pub
//	openssl pkeyutl -sign -rawin -inkey channel.key -in release.json -out release.sig
//	printf '{"payload":"%s","signature":"%s"}\n' "$(base64 -w0 release.json)" "$(base64 -w0 release.sig)" > stable.json
//
// or Sign from Go.
package manifest

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/offpeak/offpeak/internal/printable"
)

// Errors callers branch on.
var (
	// ErrBadSignature: the payload's signature does not verify with any
	// configured key.
	ErrBadSignature = errors.New("channel manifest signature invalid")
	// ErrInvalid: the file is not a well-formed envelope or release.
	ErrInvalid = errors.New("invalid channel manifest")
	// ErrWrongChannel: a validly signed release of another channel.
	ErrWrongChannel = errors.New("channel manifest is for another channel")
	// ErrHTTPStatus: the server answered with a status other than 200.
	ErrHTTPStatus = errors.New("unexpected HTTP status for the channel manifest")
	// ErrNoKey: no public key configured; an unsigned channel is never
	// trusted.
	ErrNoKey = errors.New("no channel public key configured")
)

// DefaultMaxSize bounds the channel file; a real one is a few hundred
// bytes.
const DefaultMaxSize = 64 << 10

// Image formats.
const (
	FormatRaw  = "raw"
	FormatCrAU = "crau"
)

// Release is a verified channel entry.
type Release struct {
	Version string `json:"version"`
	// URL is absolute (resolved against the channel file's URL).
	URL    string `json:"url"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	// Channel, when the signer set it, names the channel.
	Channel string `json:"channel,omitempty"`
	// ImageFormat is FormatRaw or FormatCrAU.
	ImageFormat string     `json:"image_format,omitempty"`
	ReleasedAt  *time.Time `json:"released_at,omitempty"`
}

// SHA256Bytes is the image's SHA-256 (Verify checked it is 64 hex digits).
func (r Release) SHA256Bytes() []byte {
	b, _ := hex.DecodeString(r.SHA256)
	return b
}

// Options say what a release must be.
type Options struct {
	// Keys verify the signature; one must match. Required.
	Keys []ed25519.PublicKey
	// Channel, when set, must equal the release's channel field.
	Channel string
	// Base resolves a relative url: the channel file's own URL.
	Base *url.URL
	// MaxSize bounds the file; DefaultMaxSize when 0.
	MaxSize int64
}

type envelope struct {
	Payload   *string `json:"payload"`
	Signature *string `json:"signature"`
}

// Verify checks the envelope's signature and only then parses and checks
// the release.
func Verify(data []byte, o Options) (Release, error) {
	if len(o.Keys) == 0 {
		return Release{}, ErrNoKey
	}
	for _, k := range o.Keys {
		if len(k) != ed25519.PublicKeySize {
			return Release{}, fmt.Errorf("%w: an ed25519 public key of %d bytes", ErrNoKey, len(k))
		}
	}
	limit := o.MaxSize
	if limit <= 0 {
		limit = DefaultMaxSize
	}
	if int64(len(data)) > limit {
		return Release{}, fmt.Errorf("%w: %d bytes (limit %d)", ErrInvalid, len(data), limit)
	}
	var env envelope
	if err := decodeStrict(data, &env); err != nil {
		return Release{}, fmt.Errorf("%w: envelope: %w", ErrInvalid, err)
	}
	if env.Payload == nil || env.Signature == nil {
		return Release{}, fmt.Errorf("%w: the envelope needs \"payload\" and \"signature\"", ErrInvalid)
	}
	payload, err := base64.StdEncoding.Strict().DecodeString(*env.Payload)
	if err != nil {
		return Release{}, fmt.Errorf("%w: payload is not base64: %w", ErrInvalid, err)
	}
	sig, err := base64.StdEncoding.Strict().DecodeString(*env.Signature)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return Release{}, fmt.Errorf("%w: signature is not base64 of %d bytes", ErrBadSignature, ed25519.SignatureSize)
	}
	ok := false
	for _, k := range o.Keys {
		if ed25519.Verify(k, payload, sig) {
			ok = true
			break
		}
	}
	if !ok {
		return Release{}, fmt.Errorf("%w: it does not verify with the %d configured key(s)", ErrBadSignature, len(o.Keys))
	}

	var r Release
	if err := decodeStrict(payload, &r); err != nil {
		return Release{}, fmt.Errorf("%w: release: %w", ErrInvalid, err)
	}
	if err := r.check(o); err != nil {
		return Release{}, err
	}
	return r, nil
}

func (r *Release) check(o Options) error {
	if r.Version == "" || len(r.Version) > 128 || !printable.Is(r.Version) || strings.TrimSpace(r.Version) != r.Version {
		return fmt.Errorf("%w: version %q is empty, too long or unprintable", ErrInvalid, printable.String(r.Version))
	}
	if !printable.Is(r.Channel) || len(r.Channel) > 128 {
		return fmt.Errorf("%w: channel %q", ErrInvalid, printable.String(r.Channel))
	}
	if o.Channel != "" && r.Channel != o.Channel {
		return fmt.Errorf("%w: the release is for channel %q, this node follows %q", ErrWrongChannel, printable.String(r.Channel), o.Channel)
	}
	if r.Size <= 0 {
		return fmt.Errorf("%w: size %d", ErrInvalid, r.Size)
	}
	if b, err := hex.DecodeString(r.SHA256); err != nil || len(b) != 32 {
		return fmt.Errorf("%w: sha256 %q is not 64 hex digits", ErrInvalid, printable.String(r.SHA256))
	}
	r.SHA256 = strings.ToLower(r.SHA256)
	switch r.ImageFormat {
	case "":
		r.ImageFormat = FormatRaw
	case FormatRaw, FormatCrAU:
	default:
		return fmt.Errorf("%w: image_format %q (want %q or %q)", ErrInvalid, printable.String(r.ImageFormat), FormatRaw, FormatCrAU)
	}
	u, err := url.Parse(r.URL)
	if err != nil || r.URL == "" {
		return fmt.Errorf("%w: url %q", ErrInvalid, printable.String(r.URL))
	}
	if !u.IsAbs() {
		if o.Base == nil {
			return fmt.Errorf("%w: url %q is relative and there is no base", ErrInvalid, printable.String(r.URL))
		}
		u = o.Base.ResolveReference(u)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%w: url %q is not http(s)", ErrInvalid, printable.String(r.URL))
	}
	r.URL = u.String()
	return nil
}

// decodeStrict decodes exactly one JSON value with no unknown fields.
func decodeStrict(data []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(data))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return err
	}
	if _, err := d.Token(); err != io.EOF {
		return errors.New("data after the JSON value")
	}
	return nil
}

// Fetch downloads the channel file at channelURL with hc and verifies it;
// a relative image URL resolves against channelURL.
func Fetch(ctx context.Context, hc *http.Client, channelURL string, o Options) (Release, error) {
	base, err := url.Parse(channelURL)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return Release{}, fmt.Errorf("%w: channel URL %q is not an absolute http(s) URL", ErrInvalid, redact(channelURL))
	}
	if len(o.Keys) == 0 {
		return Release{}, ErrNoKey
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, channelURL, nil)
	if err != nil {
		return Release{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // its text repeats the URL with its query
		}
		return Release{}, fmt.Errorf("fetch channel manifest %s: %w", redact(channelURL), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Release{}, fmt.Errorf("%w: %s answered %s", ErrHTTPStatus, redact(channelURL), resp.Status)
	}
	limit := o.MaxSize
	if limit <= 0 {
		limit = DefaultMaxSize
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return Release{}, fmt.Errorf("fetch channel manifest %s: %w", redact(channelURL), err)
	}
	if o.Base == nil {
		o.Base = base
	}
	r, err := Verify(data, o)
	if err != nil {
		return Release{}, fmt.Errorf("%s: %w", redact(channelURL), err)
	}
	return r, nil
}

// Sign wraps payload (the release JSON, as it will be parsed) in a signed
// envelope.
func Sign(key ed25519.PrivateKey, payload []byte) ([]byte, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("ed25519 private key of %d bytes", len(key))
	}
	p := base64.StdEncoding.EncodeToString(payload)
	s := base64.StdEncoding.EncodeToString(ed25519.Sign(key, payload))
	out, err := json.Marshal(map[string]string{"payload": p, "signature": s})
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

// ParsePublicKey reads an ed25519 public key as PEM "PUBLIC KEY" (what
// `openssl pkey -pubout` writes), as base64 of the 32 raw bytes, or as
// the raw bytes.
func ParsePublicKey(data []byte) (ed25519.PublicKey, error) {
	if len(data) == ed25519.PublicKeySize {
		return ed25519.PublicKey(bytes.Clone(data)), nil
	}
	text := bytes.TrimSpace(data)
	if blk, _ := pem.Decode(text); blk != nil {
		if blk.Type != "PUBLIC KEY" {
			return nil, fmt.Errorf("channel key: PEM block %q, want PUBLIC KEY", blk.Type)
		}
		k, err := x509.ParsePKIXPublicKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("channel key: %w", err)
		}
		pub, ok := k.(ed25519.PublicKey)
		if !ok {
			return nil, fmt.Errorf("channel key is %T, want ed25519", k)
		}
		return pub, nil
	}
	raw, err := base64.StdEncoding.DecodeString(string(text))
	if err != nil || len(raw) != ed25519.PublicKeySize {
		return nil, errors.New("channel key is neither PEM, base64 of 32 bytes, nor 32 raw bytes")
	}
	return ed25519.PublicKey(raw), nil
}

func redact(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	u.User = nil
	if u.RawQuery != "" {
		u.RawQuery = "…"
	}
	u.Fragment = ""
	return printable.String(u.String())
}
