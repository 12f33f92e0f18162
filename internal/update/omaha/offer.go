package omaha

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"

	"github.com/offpeak/offpeak/internal/printable"
)

// Offer is an update the server offers, checked: every field is present
// and well formed.
type Offer struct {
	// Version is the offered OS version (<manifest version>).
	Version string `json:"version"`
	// Name is the package file name.
	Name string `json:"name"`
	// URLs are the payload's locations, in the server's order: each
	// <url codebase> with the package name appended, as update_engine
	// builds them.
	URLs []string `json:"urls"`
	// Size is the payload's size in bytes.
	Size int64 `json:"size"`
	// SHA256 is the payload's SHA-256, from the postinstall action's
	// sha256 (base64) or else the package's hash_sha256.
	SHA256 []byte `json:"sha256"`
	// SHA1 is the package's hash (SHA-1), when the server sent one; it
	// is checked too but never trusted alone.
	SHA1 []byte `json:"sha1,omitempty"`
}

// SHA256Hex is the payload's SHA-256 in lower-case hex.
func (o Offer) SHA256Hex() string { return hex.EncodeToString(o.SHA256) }

// OfferFrom judges the answer for appID: ErrNoUpdate for "noupdate", an
// Offer for a complete "ok", an error otherwise.
func OfferFrom(r *Response, appID string) (Offer, error) {
	app, err := findApp(r, appID)
	if err != nil {
		return Offer{}, err
	}
	if app.Status != "" && app.Status != "ok" {
		return Offer{}, fmt.Errorf("%w: app status %q", ErrServerStatus, printable.String(clip(app.Status)))
	}
	uc := app.UpdateCheck
	if uc == nil {
		return Offer{}, fmt.Errorf("%w: no <updatecheck> for the app", ErrInvalidResponse)
	}
	switch uc.Status {
	case "noupdate":
		return Offer{}, ErrNoUpdate
	case "ok":
	case "":
		return Offer{}, fmt.Errorf("%w: <updatecheck> without status", ErrInvalidResponse)
	default:
		return Offer{}, fmt.Errorf("%w: update check status %q", ErrServerStatus, printable.String(clip(uc.Status)))
	}

	m, err := targetManifest(uc.Manifests)
	if err != nil {
		return Offer{}, err
	}
	if m.Version == "" || len(m.Version) > maxField || !printable.Is(m.Version) {
		return Offer{}, fmt.Errorf("%w: <manifest version=%q> is empty, too long or unprintable", ErrInvalidResponse, printable.String(clip(m.Version)))
	}
	o := Offer{Version: m.Version}

	// update_engine uses the first package; Nebraska lists extra files
	// after it.
	if len(m.Packages) == 0 {
		return Offer{}, fmt.Errorf("%w: no <package> in the manifest", ErrInvalidResponse)
	}
	pkg := m.Packages[0]
	if err := checkName(pkg.Name); err != nil {
		return Offer{}, err
	}
	o.Name = pkg.Name
	size, err := strconv.ParseInt(pkg.Size, 10, 64)
	if err != nil || size <= 0 {
		return Offer{}, fmt.Errorf("%w: <package size=%q> is not a positive number", ErrInvalidResponse, printable.String(clip(pkg.Size)))
	}
	o.Size = size
	if pkg.Hash != "" {
		sum, err := base64.StdEncoding.DecodeString(pkg.Hash)
		if err != nil || len(sum) != 20 {
			return Offer{}, fmt.Errorf("%w: <package hash=%q> is not a base64 SHA-1", ErrInvalidResponse, printable.String(clip(pkg.Hash)))
		}
		o.SHA1 = sum
	}

	var fromAction, fromPackage []byte
	for _, a := range m.Actions {
		if a.Event != "postinstall" {
			continue
		}
		if strings.EqualFold(a.IsDeltaPayload, "true") {
			return Offer{}, fmt.Errorf("%w: the server offered a delta payload; offpeak asks with delta_okay=false and installs full payloads only", ErrInvalidResponse)
		}
		if a.SHA256 != "" {
			sum, err := base64.StdEncoding.DecodeString(a.SHA256)
			if err != nil || len(sum) != 32 {
				return Offer{}, fmt.Errorf("%w: <action event=\"postinstall\" sha256=%q> is not a base64 SHA-256", ErrInvalidResponse, printable.String(clip(a.SHA256)))
			}
			fromAction = sum
		}
		break // update_engine reads the first postinstall action only
	}
	if pkg.HashSHA256 != "" {
		sum, ok := decodeSHA256(pkg.HashSHA256)
		if !ok {
			return Offer{}, fmt.Errorf("%w: <package hash_sha256=%q> is neither hex nor base64 of a SHA-256", ErrInvalidResponse, printable.String(clip(pkg.HashSHA256)))
		}
		fromPackage = sum
	}
	switch {
	case fromAction != nil && fromPackage != nil && !bytes.Equal(fromAction, fromPackage):
		return Offer{}, fmt.Errorf("%w: the postinstall action's sha256 and the package's hash_sha256 differ", ErrInvalidResponse)
	case fromAction != nil:
		o.SHA256 = fromAction
	case fromPackage != nil:
		o.SHA256 = fromPackage
	default:
		return Offer{}, fmt.Errorf("%w: %w: no <action event=\"postinstall\" sha256=...> and no <package hash_sha256=...> (in Nebraska, give the package the Flatcar type and its SHA-256)", ErrInvalidResponse, ErrMissingHash)
	}

	if len(uc.URLs) == 0 {
		return Offer{}, fmt.Errorf("%w: no <url> in the update check", ErrInvalidResponse)
	}
	for _, u := range uc.URLs {
		if u.Codebase == "" {
			return Offer{}, fmt.Errorf("%w: <url> with an empty codebase", ErrInvalidResponse)
		}
		full := u.Codebase
		if !strings.HasSuffix(full, "/") {
			full += "/"
		}
		full += pkg.Name
		if _, err := checkURL(full); err != nil {
			return Offer{}, fmt.Errorf("%w: payload %w", ErrInvalidResponse, err)
		}
		o.URLs = append(o.URLs, full)
	}
	return o, nil
}

// targetManifest picks the only manifest, or the one marked is_target when
// a server sends several.
func targetManifest(ms []Manifest) (*Manifest, error) {
	switch len(ms) {
	case 0:
		return nil, fmt.Errorf("%w: no <manifest> in an \"ok\" update check", ErrInvalidResponse)
	case 1:
		return &ms[0], nil
	}
	var target *Manifest
	for i := range ms {
		if strings.EqualFold(ms[i].IsTarget, "true") {
			if target != nil {
				return nil, fmt.Errorf("%w: several manifests marked is_target", ErrInvalidResponse)
			}
			target = &ms[i]
		}
	}
	if target == nil {
		return nil, fmt.Errorf("%w: %d manifests and none marked is_target", ErrInvalidResponse, len(ms))
	}
	return target, nil
}

// checkName refuses package names that would change the URL they are
// appended to beyond its path.
func checkName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: <package> without a name", ErrInvalidResponse)
	case len(name) > maxField, !printable.Is(name),
		strings.ContainsAny(name, "?#\\ "), strings.Contains(name, ".."):
		return fmt.Errorf("%w: <package name=%q> is not a plain file name", ErrInvalidResponse, printable.String(clip(name)))
	}
	return nil
}

// decodeSHA256 accepts 64 hex digits or base64 of 32 bytes.
func decodeSHA256(s string) ([]byte, bool) {
	if len(s) == 64 {
		if b, err := hex.DecodeString(s); err == nil {
			return b, true
		}
	}
	if b, err := base64.StdEncoding.DecodeString(s); err == nil && len(b) == 32 {
		return b, true
	}
	return nil, false
}
