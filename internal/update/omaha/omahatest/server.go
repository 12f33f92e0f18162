// Package omahatest is an Omaha server for tests, written from the
// protocol as Nebraska answers update_engine: it offers one configured
// package to every machine of its app, serves the package with Range
// support, records every request and event per machine id, and can answer
// "noupdate", an error status or an HTTP error, or cut a download short.
package omahatest

import (
	"bytes"
	"context"
	"crypto/sha1" //nolint:gosec // Omaha's package hash is SHA-1; the client never trusts it alone
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/xml"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/offpeak/offpeak/internal/update/omaha"
)

// Package is what the server offers.
type Package struct {
	Version string
	// Name is the file name; "update.gz" when empty.
	Name string
	Data []byte
	// NoActionSHA256 leaves out the postinstall action's sha256, as
	// Nebraska does for packages not of the Flatcar type.
	NoActionSHA256 bool
	// PackageSHA256Hex adds hash_sha256 in hex, as Nebraska stores it.
	PackageSHA256Hex bool
	// WrongSHA256 announces a hash the data does not have.
	WrongSHA256 bool
}

// Record is one request as the server understood it.
type Record struct {
	MachineID string
	App       omaha.AppRequest
	OS        omaha.OS
	// Check tells an update check from an event report.
	Check bool
}

// Server is a running test server.
type Server struct {
	// URL is the Omaha endpoint to give the client.
	URL   string
	appID string
	srv   *httptest.Server

	mu          sync.Mutex
	pkg         *Package
	checkStatus string // forced updatecheck status
	httpStatus  int
	raw         []byte // forced response body
	cuts        []int64
	records     []Record
	downloads   []http.Header
	changed     chan struct{} // closed and replaced on every request
}

// New starts a server for appID; it stops when the test ends.
func New(tb testing.TB, appID string) *Server {
	s := &Server{appID: appID, changed: make(chan struct{})}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/update/", s.omaha)
	mux.HandleFunc("GET /packages/", s.download)
	s.srv = httptest.NewServer(mux)
	s.URL = s.srv.URL + "/v1/update/"
	tb.Cleanup(s.srv.Close)
	return s
}

// Client returns an HTTP client for the server.
func (s *Server) Client() *http.Client { return s.srv.Client() }

// Offer makes the server offer p from now on.
func (s *Server) Offer(p Package) {
	if p.Name == "" {
		p.Name = "update.gz"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pkg = &p
	s.checkStatus, s.httpStatus, s.raw = "", 0, nil
}

// NoUpdate makes the server answer "noupdate".
func (s *Server) NoUpdate() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pkg = nil
	s.checkStatus, s.httpStatus, s.raw = "", 0, nil
}

// FailChecks makes update checks answer with status (e.g.
// "error-internal") until Offer or NoUpdate.
func (s *Server) FailChecks(status string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checkStatus = status
}

// FailHTTP makes every Omaha request answer code until Offer or NoUpdate.
func (s *Server) FailHTTP(code int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.httpStatus = code
}

// Respond makes every Omaha request answer body verbatim until Offer or
// NoUpdate.
func (s *Server) Respond(body []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.raw = bytes.Clone(body)
}

// CutDownloads makes the next downloads drop the connection after the
// given numbers of body bytes, one per download.
func (s *Server) CutDownloads(after ...int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cuts = append(s.cuts, after...)
}

// Records returns every request so far.
func (s *Server) Records() []Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Record(nil), s.records...)
}

// Events returns the events a machine reported, in order, whether sent
// alone or with an update check.
func (s *Server) Events(machineID string) []omaha.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []omaha.Event
	for _, r := range s.records {
		if r.MachineID != machineID {
			continue
		}
		for _, e := range r.App.Events {
			ev := omaha.Event{Type: e.Type, Result: e.Result, PreviousVersion: e.PreviousVersion}
			if code, err := strconv.Atoi(e.ErrorCode); err == nil {
				ev.Code = omaha.ErrorCode(code)
			}
			out = append(out, ev)
		}
	}
	return out
}

// Downloads returns the headers of every download request (Range,
// If-Range).
func (s *Server) Downloads() []http.Header {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]http.Header(nil), s.downloads...)
}

// WaitRecords blocks until the server has n records or ctx ends, for
// tests whose client runs in another goroutine.
func (s *Server) WaitRecords(ctx context.Context, n int) ([]Record, error) {
	for {
		s.mu.Lock()
		if len(s.records) >= n {
			out := append([]Record(nil), s.records...)
			s.mu.Unlock()
			return out, nil
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-ch:
		}
	}
}

// PackageURL is where the offered package is served.
func (s *Server) PackageURL(name string) string { return s.srv.URL + "/packages/" + name }

func (s *Server) omaha(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	req, err := omaha.ParseRequest(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, app := range req.Apps {
		os := omaha.OS{}
		if req.OS != nil {
			os = *req.OS
		}
		s.records = append(s.records, Record{MachineID: app.MachineID, App: app, OS: os, Check: app.UpdateCheck != nil})
	}
	close(s.changed)
	s.changed = make(chan struct{})

	if s.httpStatus != 0 {
		http.Error(w, http.StatusText(s.httpStatus), s.httpStatus)
		return
	}
	w.Header().Set("Content-Type", "text/xml")
	if s.raw != nil {
		w.Write(s.raw)
		return
	}
	resp := omaha.Response{Protocol: omaha.ProtocolVersion, Server: "omahatest", DayStart: &omaha.DayStart{ElapsedSeconds: "0"}}
	for _, app := range req.Apps {
		ra := omaha.AppResponse{AppID: app.AppID, Status: "ok"}
		if !strings.EqualFold(app.AppID, s.appID) {
			ra.Status = "error-unknownApplication"
			ra.UpdateCheck = &omaha.UpdateCheckResponse{Status: "error-internal"}
			resp.Apps = append(resp.Apps, ra)
			continue
		}
		for range app.Events {
			ra.Events = append(ra.Events, omaha.StatusResponse{Status: "ok"})
		}
		if app.Ping != nil {
			ra.Ping = &omaha.StatusResponse{Status: "ok"}
		}
		if app.UpdateCheck != nil {
			ra.UpdateCheck = s.updateCheck()
		}
		resp.Apps = append(resp.Apps, ra)
	}
	out, err := xml.Marshal(resp)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Write([]byte(xml.Header))
	w.Write(out)
}

func (s *Server) updateCheck() *omaha.UpdateCheckResponse {
	switch {
	case s.checkStatus != "":
		return &omaha.UpdateCheckResponse{Status: s.checkStatus}
	case s.pkg == nil:
		return &omaha.UpdateCheckResponse{Status: "noupdate"}
	}
	p := s.pkg
	s1 := sha1.Sum(p.Data) //nolint:gosec // see import
	s256 := sha256.Sum256(p.Data)
	if p.WrongSHA256 {
		s256[0] ^= 0xff
	}
	pkg := omaha.Package{
		Name: p.Name, Hash: base64.StdEncoding.EncodeToString(s1[:]),
		Size: strconv.Itoa(len(p.Data)), Required: "true",
	}
	if p.PackageSHA256Hex {
		pkg.HashSHA256 = hex.EncodeToString(s256[:])
	}
	action := omaha.Action{Event: "postinstall", DisplayVersion: p.Version, DisablePayloadBackoff: "true"}
	if !p.NoActionSHA256 {
		action.SHA256 = base64.StdEncoding.EncodeToString(s256[:])
	}
	return &omaha.UpdateCheckResponse{
		Status: "ok",
		URLs:   []omaha.URL{{Codebase: s.srv.URL + "/packages/"}},
		Manifests: []omaha.Manifest{{
			Version:  p.Version,
			Packages: []omaha.Package{pkg},
			Actions:  []omaha.Action{action},
		}},
	}
}

func (s *Server) download(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.downloads = append(s.downloads, r.Header.Clone())
	p := s.pkg
	cut := int64(-1)
	if len(s.cuts) > 0 {
		cut, s.cuts = s.cuts[0], s.cuts[1:]
	}
	s.mu.Unlock()
	if p == nil || "/packages/"+p.Name != r.URL.Path {
		http.NotFound(w, r)
		return
	}
	sum := sha256.Sum256(p.Data)
	w.Header().Set("ETag", `"`+hex.EncodeToString(sum[:8])+`"`)
	if cut >= 0 {
		w = &cutWriter{ResponseWriter: w, left: cut}
	}
	http.ServeContent(w, r, p.Name, time.Time{}, bytes.NewReader(p.Data))
}

// cutWriter sends left body bytes, then drops the connection.
type cutWriter struct {
	http.ResponseWriter
	left int64
}

func (c *cutWriter) Write(p []byte) (int, error) {
	if int64(len(p)) <= c.left {
		c.left -= int64(len(p))
		return c.ResponseWriter.Write(p)
	}
	c.ResponseWriter.Write(p[:c.left])
	c.left = 0
	c.ResponseWriter.(http.Flusher).Flush()
	panic(http.ErrAbortHandler)
}
