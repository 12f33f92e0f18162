// Package omaha speaks the Omaha update protocol, version 3.0, the way
// Flatcar's update_engine does, so that an Omaha server such as Nebraska
// sees an offpeak node as one of its instances: an update check (with a
// ping, and after an update the "update complete" event) and the events of
// an update in progress.
//
// The XML shapes here are written from the protocol as update_engine sends
// and parses it; only what update_engine uses is modelled. Everything read
// from a server is untrusted: responses are size bounded, and an offer is
// accepted only with a SHA-256 of the payload, a size, a version and at
// least one http(s) URL.
package omaha

import "encoding/xml"

// ProtocolVersion is the only protocol spoken.
const ProtocolVersion = "3.0"

// Request is the document a client POSTs.
type Request struct {
	XMLName        xml.Name     `xml:"request"`
	Protocol       string       `xml:"protocol,attr"`
	Version        string       `xml:"version,attr,omitempty"`
	UpdaterVersion string       `xml:"updaterversion,attr,omitempty"`
	InstallSource  string       `xml:"installsource,attr,omitempty"`
	IsMachine      string       `xml:"ismachine,attr,omitempty"`
	OS             *OS          `xml:"os"`
	Apps           []AppRequest `xml:"app"`
}

// OS describes the client's system. update_engine sends the platform
// ("CoreOS"), a version and the service pack "<release>_<machine>".
type OS struct {
	Platform    string `xml:"platform,attr,omitempty"`
	Version     string `xml:"version,attr,omitempty"`
	ServicePack string `xml:"sp,attr,omitempty"`
	Arch        string `xml:"arch,attr,omitempty"`
}

// AppRequest is one application's part of a request. The attributes after
// Track are update_engine's extensions; Nebraska keys its instances by
// MachineID and picks the group by Track and the architecture by Board.
type AppRequest struct {
	AppID         string `xml:"appid,attr"`
	Version       string `xml:"version,attr,omitempty"`
	Track         string `xml:"track,attr,omitempty"`
	BootID        string `xml:"bootid,attr,omitempty"`
	OEM           string `xml:"oem,attr,omitempty"`
	OEMVersion    string `xml:"oemversion,attr,omitempty"`
	AlephVersion  string `xml:"alephversion,attr,omitempty"`
	MachineID     string `xml:"machineid,attr,omitempty"`
	MachineAlias  string `xml:"machinealias,attr,omitempty"`
	Lang          string `xml:"lang,attr,omitempty"`
	Board         string `xml:"board,attr,omitempty"`
	HardwareClass string `xml:"hardware_class,attr,omitempty"`
	DeltaOK       string `xml:"delta_okay,attr,omitempty"`

	Ping        *PingRequest        `xml:"ping"`
	UpdateCheck *UpdateCheckRequest `xml:"updatecheck"`
	Events      []EventRequest      `xml:"event"`
}

// PingRequest tells the server the instance is alive; update_engine
// always sends active="1".
type PingRequest struct {
	Active string `xml:"active,attr,omitempty"`
}

// UpdateCheckRequest asks for an update.
type UpdateCheckRequest struct {
	TargetVersionPrefix string `xml:"targetversionprefix,attr,omitempty"`
}

// EventRequest reports a step of an update. ErrorCode is sent only with
// ResultError, PreviousVersion only with the "update complete after
// reboot" event, as update_engine does.
type EventRequest struct {
	Type            EventType   `xml:"eventtype,attr"`
	Result          EventResult `xml:"eventresult,attr"`
	ErrorCode       string      `xml:"errorcode,attr,omitempty"`
	PreviousVersion string      `xml:"previousversion,attr,omitempty"`
}

// Response is the server's answer. Numbers and flags are kept as the text
// the server sent and checked when an Offer is built from them, so a bad
// value gets an error naming the attribute.
type Response struct {
	XMLName  xml.Name      `xml:"response"`
	Protocol string        `xml:"protocol,attr"`
	Server   string        `xml:"server,attr,omitempty"`
	DayStart *DayStart     `xml:"daystart"`
	Apps     []AppResponse `xml:"app"`
}

// DayStart is the server's "seconds since midnight", which update_engine
// ignores.
type DayStart struct {
	ElapsedSeconds string `xml:"elapsed_seconds,attr"`
}

// AppResponse is the answer for one application.
type AppResponse struct {
	AppID       string               `xml:"appid,attr"`
	Status      string               `xml:"status,attr,omitempty"`
	Ping        *StatusResponse      `xml:"ping"`
	UpdateCheck *UpdateCheckResponse `xml:"updatecheck"`
	Events      []StatusResponse     `xml:"event"`
}

// StatusResponse acknowledges a ping or an event (status="ok").
type StatusResponse struct {
	Status string `xml:"status,attr"`
}

// UpdateCheckResponse answers an update check: status "noupdate", "ok"
// (with URLs and a manifest) or an error status such as "error-internal".
type UpdateCheckResponse struct {
	Status    string     `xml:"status,attr"`
	URLs      []URL      `xml:"urls>url"`
	Manifests []Manifest `xml:"manifest"`
}

// URL is a base the package name is appended to.
type URL struct {
	Codebase string `xml:"codebase,attr"`
}

// Manifest describes the offered version. IsTarget marks the final one
// when a server sends several (Nebraska's multi-step updates).
type Manifest struct {
	Version  string    `xml:"version,attr"`
	IsTarget string    `xml:"is_target,attr,omitempty"`
	Packages []Package `xml:"packages>package"`
	Actions  []Action  `xml:"actions>action"`
}

// Package is one downloadable file. Hash is the SHA-1 of the file in
// base64; HashSHA256 is its SHA-256, which Nebraska stores as hex and
// go-omaha writes as base64, so both are accepted.
type Package struct {
	Name       string `xml:"name,attr"`
	Hash       string `xml:"hash,attr,omitempty"`
	HashSHA256 string `xml:"hash_sha256,attr,omitempty"`
	Size       string `xml:"size,attr"`
	Required   string `xml:"required,attr,omitempty"`
}

// Action carries update_engine's parameters; the one with
// event="postinstall" holds the payload's SHA-256 in base64.
type Action struct {
	Event                 string `xml:"event,attr"`
	SHA256                string `xml:"sha256,attr,omitempty"`
	DisplayVersion        string `xml:"DisplayVersion,attr,omitempty"`
	IsDeltaPayload        string `xml:"IsDeltaPayload,attr,omitempty"`
	DisablePayloadBackoff string `xml:"DisablePayloadBackoff,attr,omitempty"`
	MaxFailureCountPerURL string `xml:"MaxFailureCountPerUrl,attr,omitempty"`
	NeedsAdmin            string `xml:"needsadmin,attr,omitempty"`
	MetadataSize          string `xml:"MetadataSize,attr,omitempty"`
	MetadataSignatureRsa  string `xml:"MetadataSignatureRsa,attr,omitempty"`
	Deadline              string `xml:"deadline,attr,omitempty"`
}
