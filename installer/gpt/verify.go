package gpt

import (
	"bytes"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
)

// Verification errors.
var (
	// ErrChecksumMismatch: the image's SHA-256 is not the expected one.
	ErrChecksumMismatch = errors.New("image checksum mismatch")
	// ErrBadSignature: the ed25519 signature does not verify.
	ErrBadSignature = errors.New("image signature invalid")
)

// ParseSHA256 checks a hex SHA-256 and returns it in lower case.
func ParseSHA256(s string) (string, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	if b, err := hex.DecodeString(s); err != nil || len(b) != 32 {
		return "", fmt.Errorf("%w: %q is not a hex SHA-256", ErrInvalidArgument, s)
	}
	return s, nil
}

// ParsePublicKey reads an ed25519 public key given as the raw 32 bytes, as
// base64 of those bytes, or as PEM "PUBLIC KEY" (what `openssl pkey -pubout`
// writes; base64 of that DER is accepted too).
func ParsePublicKey(data []byte) (ed25519.PublicKey, error) {
	if len(data) == ed25519.PublicKeySize {
		return ed25519.PublicKey(bytes.Clone(data)), nil
	}
	text := bytes.TrimSpace(data)
	var der []byte
	if blk, _ := pem.Decode(text); blk != nil {
		if blk.Type != "PUBLIC KEY" {
			return nil, fmt.Errorf("%w: PEM block %q, want PUBLIC KEY", ErrInvalidArgument, blk.Type)
		}
		der = blk.Bytes
	} else {
		raw, err := base64.StdEncoding.DecodeString(string(text))
		if err != nil {
			return nil, fmt.Errorf("%w: public key is neither 32 raw bytes, base64 nor PEM", ErrInvalidArgument)
		}
		if len(raw) == ed25519.PublicKeySize {
			return ed25519.PublicKey(raw), nil
		}
		der = raw
	}
	k, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("%w: public key: %w", ErrInvalidArgument, err)
	}
	pub, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%w: public key is %T, want ed25519", ErrInvalidArgument, k)
	}
	return pub, nil
}

// ParseSignature reads an ed25519 signature given as the raw 64 bytes or
// as base64 of them.
func ParseSignature(data []byte) ([]byte, error) {
	if len(data) == ed25519.SignatureSize {
		return bytes.Clone(data), nil
	}
	raw, err := base64.StdEncoding.DecodeString(string(bytes.TrimSpace(data)))
	if err != nil || len(raw) != ed25519.SignatureSize {
		return nil, fmt.Errorf("%w: signature is neither 64 raw bytes nor base64 of them", ErrInvalidArgument)
	}
	return raw, nil
}

// ReadPublicKey and ReadSignature load ParsePublicKey/ParseSignature input
// from a file.
func ReadPublicKey(path string) (ed25519.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	k, err := ParsePublicKey(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

func ReadSignature(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("signature: %w", err)
	}
	s, err := ParseSignature(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// SignedMessage is what the signature covers: the image's SHA-256 as 64
// lower-case hex characters, without a newline. Sign it with
// `openssl pkeyutl -sign -rawin -inkey key.pem -in digest.txt`.
func SignedMessage(sha256hex string) []byte { return []byte(strings.ToLower(sha256hex)) }

// verify checks the computed digest against the expected checksum and the
// signature; it reports what was checked.
func verify(sum, want string, sig []byte, pub ed25519.PublicKey) (string, error) {
	var checked []string
	if want != "" {
		if sum != want {
			return "", fmt.Errorf("%w: image has SHA-256 %s, expected %s", ErrChecksumMismatch, sum, want)
		}
		checked = append(checked, "sha256")
	}
	if pub != nil {
		if !ed25519.Verify(pub, SignedMessage(sum), sig) {
			return "", fmt.Errorf("%w: ed25519 signature over SHA-256 %s does not verify with the given key", ErrBadSignature, sum)
		}
		checked = append(checked, "signature")
	}
	if len(checked) == 0 {
		return "none", nil
	}
	return strings.Join(checked, "+"), nil
}
