// Package update holds what the update client's parts share: the mapping
// of their errors to the error codes update_engine reports to an Omaha
// server, and the step from a download to the image the installer writes.
//
// The parts, each usable alone:
//
//   - omaha: update checks and events against an Omaha server (Nebraska);
//     omaha/omahatest is a server for tests.
//   - manifest: a signed static channel file, the alternative to Omaha.
//   - fetch: the download as an io.Reader, resumed by Range, hash-checked
//     at its end.
//   - payload: Flatcar's "CrAU" full payloads turned into the raw image.
//
// A whole update is: find an offer (omaha.Client.Check or manifest.Fetch),
// fetch.Fetcher.Open its URL, Image on the download, and hand the Image's
// Reader, Size and SHA256 to the gpt installer; any error on the way is a
// failed install (ErrorCode gives the event's code).
package update

import (
	"bufio"
	"crypto/rsa"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	"github.com/offpeak/offpeak/installer/gpt"
	"github.com/offpeak/offpeak/internal/update/fetch"
	"github.com/offpeak/offpeak/internal/update/omaha"
	"github.com/offpeak/offpeak/internal/update/payload"
)

// Format says what a download holds.
type Format int

const (
	// FormatAuto looks at the first bytes: "CrAU" is a payload,
	// anything else a raw image.
	FormatAuto Format = iota
	// FormatRaw: the download is the partition image.
	FormatRaw
	// FormatPayload: the download is a Flatcar update payload.
	FormatPayload
)

// Image is what the installer writes: gpt.Options' Image, Size and SHA256.
type Image struct {
	Reader io.Reader
	// Size of the image in bytes; for a raw image the download's size.
	Size int64
	// SHA256 in hex: the payload's signed new-partition hash, or for a
	// raw image the download's hash.
	SHA256 string
	// Payload is set when the download is a payload.
	Payload *payload.Reader
}

// ErrNoPayloadKey: a payload arrived and no RSA key is configured to
// verify it.
var ErrNoPayloadKey = errors.New("update payload but no payload key configured")

// NewImage turns a download of size bytes with SHA-256 sum into the image
// to install. For a payload it reads the header and manifest (so a delta
// or unsigned payload is refused before the installer touches the disk);
// keys verify its signature.
func NewImage(download io.Reader, size int64, sum []byte, f Format, keys []*rsa.PublicKey) (Image, error) {
	br := bufio.NewReaderSize(download, 64<<10)
	if f == FormatAuto {
		head, err := br.Peek(len(payload.Magic))
		if err != nil && len(head) < len(payload.Magic) {
			return Image{}, fmt.Errorf("read the image's first bytes: %w", err)
		}
		f = FormatRaw
		if payload.HasMagic(head) {
			f = FormatPayload
		}
	}
	if f == FormatRaw {
		return Image{Reader: br, Size: size, SHA256: hex.EncodeToString(sum)}, nil
	}
	if len(keys) == 0 {
		return Image{}, ErrNoPayloadKey
	}
	pr, err := payload.Open(br, payload.Options{PublicKeys: keys})
	if err != nil {
		return Image{}, err
	}
	return Image{Reader: pr, Size: pr.ImageSize(), SHA256: hex.EncodeToString(pr.ImageSHA256()), Payload: pr}, nil
}

// ErrorCode is the update_engine error code for a failed update, for the
// 3/0 event. The most specific cause in the chain wins.
func ErrorCode(err error) omaha.ErrorCode {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, fetch.ErrHashMismatch):
		return omaha.CodePayloadHashMismatchError
	case errors.Is(err, gpt.ErrChecksumMismatch):
		return omaha.CodeNewRootfsVerificationError
	case errors.Is(err, fetch.ErrSizeMismatch):
		return omaha.CodePayloadSizeMismatchError
	case errors.Is(err, payload.ErrBadSignature), errors.Is(err, payload.ErrNoKey), errors.Is(err, ErrNoPayloadKey):
		return omaha.CodePayloadPubKeyVerificationError
	case errors.Is(err, payload.ErrNotPayload):
		return omaha.CodeDownloadInvalidMetadataMagic
	case errors.Is(err, payload.ErrUnsupportedVersion):
		return omaha.CodeDownloadManifestParseError
	case errors.Is(err, payload.ErrDeltaUnsupported), errors.Is(err, payload.ErrUnsupportedOperation):
		return omaha.CodeDownloadOperationExecution
	case errors.Is(err, payload.ErrCorrupt):
		return omaha.CodeDownloadOperationHashMismatch
	case errors.Is(err, fetch.ErrChanged), errors.Is(err, fetch.ErrInterrupted), errors.Is(err, fetch.ErrHTTPStatus),
		errors.Is(err, payload.ErrTruncated), errors.Is(err, gpt.ErrTruncated):
		return omaha.CodeDownloadTransferError
	case errors.Is(err, gpt.ErrImageTooLarge):
		return omaha.CodeDownloadWriteError
	case errors.Is(err, omaha.ErrInvalidResponse):
		return omaha.CodeOmahaResponseInvalid
	case errors.Is(err, omaha.ErrHTTPStatus), errors.Is(err, omaha.ErrServerStatus), errors.Is(err, omaha.ErrResponseTooLarge):
		return omaha.CodeOmahaRequestError
	}
	return omaha.CodeError
}
