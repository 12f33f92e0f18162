package omaha

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"

	"github.com/offpeak/offpeak/internal/printable"
)

// Errors callers branch on.
var (
	// ErrNoUpdate: the server has nothing newer (updatecheck status
	// "noupdate"). Not a failure.
	ErrNoUpdate = errors.New("no update offered")
	// ErrInvalidResponse: the answer is not a usable Omaha response
	// (not XML, wrong protocol, our app missing, an offer lacking a
	// required field). update_engine reports this as code 34.
	ErrInvalidResponse = errors.New("invalid Omaha response")
	// ErrMissingHash: an "ok" offer without a SHA-256 of the payload,
	// neither the postinstall action's sha256 nor the package's
	// hash_sha256. Wraps ErrInvalidResponse too. A SHA-1 alone is not
	// enough to trust a download.
	ErrMissingHash = errors.New("offer has no SHA-256 of the payload")
	// ErrServerStatus: the server answered with an error status for our
	// app or update check (e.g. "error-unknownApplication",
	// "error-internal").
	ErrServerStatus = errors.New("error status from the Omaha server")
	// ErrHTTPStatus: the server answered with an HTTP status other than
	// 200.
	ErrHTTPStatus = errors.New("unexpected HTTP status from the Omaha server")
	// ErrResponseTooLarge: the answer exceeded MaxResponseBytes.
	ErrResponseTooLarge = errors.New("response from the Omaha server too large")
	// ErrInvalidParams: the request would carry a missing or unprintable
	// field.
	ErrInvalidParams = errors.New("invalid Omaha request parameters")
)

// DefaultMaxResponseBytes bounds a response: real ones are a few KiB.
const DefaultMaxResponseBytes = 1 << 20

// maxField bounds every string sent or accepted as an identifier.
const maxField = 256

// Params describe this node as update_engine describes a Flatcar machine.
// AppID, Version and MachineID are required.
type Params struct {
	// AppID is the Omaha application id (a GUID in braces for Flatcar;
	// Nebraska accepts its own application ids as well).
	AppID string
	// Version is the version of the booted OS image.
	Version string
	// Track is the channel or group (update_engine's GROUP): Nebraska
	// finds the group by its track name or id.
	Track string
	// MachineID identifies the node (update_engine sends
	// /etc/machine-id); Nebraska keys its instances by it.
	MachineID string
	// BootID changes every boot (/proc/sys/kernel/random/boot_id).
	BootID string
	// MachineAlias is a friendly name shown by Nebraska.
	MachineAlias string
	// OEM, OEMVersion and AlephVersion are Flatcar's; optional.
	OEM, OEMVersion, AlephVersion string
	// Board picks the architecture in Nebraska: "amd64-usr" or
	// "arm64-usr" (see BoardFor).
	Board string
	// OSPlatform, OSVersion, OSServicePack and OSArch fill <os>; empty
	// platform means "CoreOS" as update_engine sends, empty service pack
	// means "<Version>_<arch>".
	OSPlatform, OSVersion, OSServicePack, OSArch string
	// Interactive marks a check an operator asked for
	// (installsource="ondemandupdate" rather than "scheduler").
	Interactive bool
}

// BoardFor returns update_engine's board name for a Go architecture, or ""
// when Flatcar has none.
func BoardFor(goarch string) string {
	switch goarch {
	case "amd64":
		return "amd64-usr"
	case "arm64":
		return "arm64-usr"
	}
	return ""
}

// Validate reports the first missing or unusable field.
func (p Params) Validate() error {
	required := []struct{ name, v string }{{"app_id", p.AppID}, {"version", p.Version}, {"machine_id", p.MachineID}}
	for _, f := range required {
		if f.v == "" {
			return fmt.Errorf("%w: %s is empty", ErrInvalidParams, f.name)
		}
	}
	fields := []struct{ name, v string }{
		{"app_id", p.AppID}, {"version", p.Version}, {"track", p.Track}, {"machine_id", p.MachineID},
		{"boot_id", p.BootID}, {"machine_alias", p.MachineAlias}, {"oem", p.OEM}, {"oem_version", p.OEMVersion},
		{"aleph_version", p.AlephVersion}, {"board", p.Board}, {"os_platform", p.OSPlatform},
		{"os_version", p.OSVersion}, {"os_sp", p.OSServicePack}, {"os_arch", p.OSArch},
	}
	for _, f := range fields {
		if len(f.v) > maxField || !printable.Is(f.v) {
			return fmt.Errorf("%w: %s %q is longer than %d bytes or unprintable", ErrInvalidParams, f.name, printable.String(clip(f.v)), maxField)
		}
	}
	return nil
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// Client talks to one Omaha server. It holds no state between calls.
type Client struct {
	// URL is the server's update endpoint, e.g.
	// https://nebraska.example/v1/update/.
	URL string
	// HTTP sends the requests; its Timeout, TLS settings and proxy are
	// the caller's.
	HTTP *http.Client
	// UpdaterVersion names the client in <request version=...>;
	// "offpeak" when empty.
	UpdaterVersion string
	// MaxResponseBytes bounds a response; DefaultMaxResponseBytes when 0.
	MaxResponseBytes int64
	Logger           *slog.Logger
}

// NewClient checks the server URL (http or https, with a host) and returns
// a client using hc.
func NewClient(server string, hc *http.Client) (*Client, error) {
	if _, err := checkURL(server); err != nil {
		return nil, fmt.Errorf("%w: server: %w", ErrInvalidParams, err)
	}
	if hc == nil {
		return nil, fmt.Errorf("%w: no HTTP client", ErrInvalidParams)
	}
	return &Client{URL: server, HTTP: hc}, nil
}

// Check asks for an update, with a ping, as update_engine's periodic check
// does. events ride along in the same request; update_engine sends the
// "update complete" event (3/2, EventUpdateComplete) this way in the first
// check after the reboot into a new version.
//
// It returns ErrNoUpdate when nothing is offered, and an Offer only when
// the answer names a version, a size, a SHA-256 and at least one http(s)
// URL of the payload; otherwise an error wrapping ErrInvalidResponse,
// ErrMissingHash or ErrServerStatus.
func (c *Client) Check(ctx context.Context, p Params, events ...Event) (Offer, error) {
	req, err := c.request(p, true, events)
	if err != nil {
		return Offer{}, err
	}
	resp, err := c.post(ctx, req)
	if err != nil {
		return Offer{}, err
	}
	return OfferFrom(resp, p.AppID)
}

// Event reports one step of an update in a request of its own, as
// update_engine does. The server's acknowledgement is checked only as far
// as HTTP and XML go: update_engine treats events as best effort too.
func (c *Client) Event(ctx context.Context, p Params, ev Event) error {
	req, err := c.request(p, false, []Event{ev})
	if err != nil {
		return err
	}
	resp, err := c.post(ctx, req)
	if err != nil {
		return fmt.Errorf("event %s: %w", ev, err)
	}
	app, err := findApp(resp, p.AppID)
	if err != nil {
		return fmt.Errorf("event %s: %w", ev, err)
	}
	if app.Status != "" && app.Status != "ok" {
		return fmt.Errorf("event %s: %w: app status %q", ev, ErrServerStatus, printable.String(clip(app.Status)))
	}
	return nil
}

// NewRequest builds the document Check (check true) or Event sends.
func NewRequest(p Params, updaterVersion string, check bool, events []Event) (*Request, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	for _, ev := range events {
		if ev.Result == EventResultSuccessReboot && ev.PreviousVersion == "" {
			return nil, fmt.Errorf("%w: event %s needs the previous version", ErrInvalidParams, ev)
		}
		if len(ev.PreviousVersion) > maxField || !printable.Is(ev.PreviousVersion) {
			return nil, fmt.Errorf("%w: event previous version is longer than %d bytes or unprintable", ErrInvalidParams, maxField)
		}
	}
	if updaterVersion == "" {
		updaterVersion = "offpeak"
	}
	source := "scheduler"
	if p.Interactive {
		source = "ondemandupdate"
	}
	osv := &OS{Platform: p.OSPlatform, Version: p.OSVersion, ServicePack: p.OSServicePack, Arch: p.OSArch}
	if osv.Platform == "" {
		osv.Platform = "CoreOS"
	}
	if osv.ServicePack == "" && p.OSArch != "" {
		osv.ServicePack = p.Version + "_" + p.OSArch
	}
	app := AppRequest{
		AppID: p.AppID, Version: p.Version, Track: p.Track, BootID: p.BootID,
		OEM: p.OEM, OEMVersion: p.OEMVersion, AlephVersion: p.AlephVersion,
		MachineID: p.MachineID, MachineAlias: p.MachineAlias, Lang: "en-US",
		Board: p.Board, DeltaOK: "false",
	}
	if check {
		app.Ping = &PingRequest{Active: "1"}
		app.UpdateCheck = &UpdateCheckRequest{}
	}
	for _, ev := range events {
		app.Events = append(app.Events, ev.request())
	}
	return &Request{
		Protocol: ProtocolVersion, Version: updaterVersion, UpdaterVersion: updaterVersion,
		InstallSource: source, IsMachine: "1", OS: osv, Apps: []AppRequest{app},
	}, nil
}

func (c *Client) request(p Params, check bool, events []Event) (*Request, error) {
	return NewRequest(p, c.UpdaterVersion, check, events)
}

func (c *Client) post(ctx context.Context, req *Request) (*Response, error) {
	if c.HTTP == nil {
		return nil, fmt.Errorf("%w: no HTTP client", ErrInvalidParams)
	}
	body, err := xml.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encode Omaha request: %w", err)
	}
	body = append([]byte(xml.Header), body...)
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, c.URL, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("%w: server: %w", ErrInvalidParams, err)
	}
	hr.Header.Set("Content-Type", "text/xml; charset=utf-8")
	hresp, err := c.HTTP.Do(hr)
	if err != nil {
		// Not the *url.Error: it repeats the URL with its query.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("request to the Omaha server %s: %w", redact(c.URL), err)
	}
	defer hresp.Body.Close()
	limit := c.MaxResponseBytes
	if limit <= 0 {
		limit = DefaultMaxResponseBytes
	}
	data, err := io.ReadAll(io.LimitReader(hresp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("response from the Omaha server %s: %w", redact(c.URL), err)
	}
	if hresp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%w: %s answered %s", ErrHTTPStatus, redact(c.URL), hresp.Status)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%w: more than %d bytes from %s", ErrResponseTooLarge, limit, redact(c.URL))
	}
	resp, err := ParseResponse(data)
	if err != nil {
		return nil, err
	}
	if c.Logger != nil {
		c.Logger.DebugContext(ctx, "Omaha exchange", "server", redact(c.URL), "request_bytes", len(body), "response_bytes", len(data))
	}
	return resp, nil
}

// ParseResponse decodes a response document and checks its root and
// protocol. It does not judge the offer; OfferFrom does.
func ParseResponse(data []byte) (*Response, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, fmt.Errorf("%w: empty body", ErrInvalidResponse)
	}
	var r Response
	if err := decodeOne(data, &r); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidResponse, err)
	}
	if r.Protocol != ProtocolVersion {
		return nil, fmt.Errorf("%w: protocol %q, want %q", ErrInvalidResponse, printable.String(clip(r.Protocol)), ProtocolVersion)
	}
	return &r, nil
}

// ParseRequest decodes a request document (the server side, for tests and
// servers written on this package).
func ParseRequest(data []byte) (*Request, error) {
	var r Request
	if err := decodeOne(data, &r); err != nil {
		return nil, fmt.Errorf("invalid Omaha request: %w", err)
	}
	if r.Protocol != ProtocolVersion {
		return nil, fmt.Errorf("invalid Omaha request: protocol %q, want %q", printable.String(clip(r.Protocol)), ProtocolVersion)
	}
	return &r, nil
}

// decodeOne decodes exactly one XML document element; trailing elements
// are refused, trailing whitespace, comments and processing instructions
// are not.
func decodeOne(data []byte, v any) error {
	d := xml.NewDecoder(bytes.NewReader(data))
	if err := d.Decode(v); err != nil {
		return err
	}
	for {
		tok, err := d.Token()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		switch t := tok.(type) {
		case xml.CharData:
			if len(bytes.TrimSpace(t)) != 0 {
				return errors.New("text after the document element")
			}
		case xml.Comment, xml.ProcInst:
		default:
			return errors.New("content after the document element")
		}
	}
}

func findApp(r *Response, appID string) (*AppResponse, error) {
	for i := range r.Apps {
		if strings.EqualFold(r.Apps[i].AppID, appID) {
			return &r.Apps[i], nil
		}
	}
	return nil, fmt.Errorf("%w: no <app appid=%q> in the answer", ErrInvalidResponse, appID)
}

// checkURL accepts absolute http and https URLs with a host.
func checkURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("URL %q: %w", printable.String(clip(s)), err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("URL %q: scheme must be http or https", redact(s))
	}
	if u.Host == "" {
		return nil, fmt.Errorf("URL %q: no host", redact(s))
	}
	return u, nil
}

// redact drops user info and query from a URL for messages: either may
// carry a secret.
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
