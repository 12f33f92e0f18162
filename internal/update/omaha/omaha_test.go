package omaha_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/offpeak/offpeak/internal/update/omaha"
	"github.com/offpeak/offpeak/internal/update/omaha/omahatest"
)

const appID = "{e96281a6-d1af-4bde-9a0a-97b76e56dc57}"

func params() omaha.Params {
	return omaha.Params{
		AppID: appID, Version: "4081.2.0", Track: "stable", MachineID: "0123456789abcdef0123456789abcdef",
		BootID: "d2b1c3e4-0000-4000-8000-000000000001", MachineAlias: "web-1", Board: "amd64-usr",
		OSVersion: "Chateau", OSArch: "x86_64",
	}
}

// The request is what update_engine sends, attribute for attribute.
func TestRequestOnTheWire(t *testing.T) {
	req, err := omaha.NewRequest(params(), "offpeak-1.0", true, []omaha.Event{omaha.EventUpdateComplete("4000.0.0")})
	if err != nil {
		t.Fatal(err)
	}
	got, err := xml.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	want := `<request protocol="3.0" version="offpeak-1.0" updaterversion="offpeak-1.0" installsource="scheduler" ismachine="1">` +
		`<os platform="CoreOS" version="Chateau" sp="4081.2.0_x86_64" arch="x86_64"></os>` +
		`<app appid="{e96281a6-d1af-4bde-9a0a-97b76e56dc57}" version="4081.2.0" track="stable" bootid="d2b1c3e4-0000-4000-8000-000000000001" ` +
		`machineid="0123456789abcdef0123456789abcdef" machinealias="web-1" lang="en-US" board="amd64-usr" delta_okay="false">` +
		`<ping active="1"></ping><updatecheck></updatecheck><event eventtype="3" eventresult="2" previousversion="4000.0.0"></event></app></request>`
	if string(got) != want {
		t.Fatalf("request\n got %s\nwant %s", got, want)
	}

	// An event report carries only the event; an error carries its code.
	req, err = omaha.NewRequest(params(), "", false, []omaha.Event{omaha.EventFailed(omaha.CodePayloadHashMismatchError)})
	if err != nil {
		t.Fatal(err)
	}
	got, _ = xml.Marshal(req)
	if !bytes.HasSuffix(got, []byte(`delta_okay="false"><event eventtype="3" eventresult="0" errorcode="10"></event></app></request>`)) {
		t.Fatalf("event report %s", got)
	}
	if req.Version != "offpeak" || req.InstallSource != "scheduler" {
		t.Fatalf("version %q source %q", req.Version, req.InstallSource)
	}
}

// A request as update_engine formats it parses (the test server reads
// requests with these types).
func TestParseUpdateEngineRequest(t *testing.T) {
	doc := `<?xml version="1.0" encoding="UTF-8"?>
<request protocol="3.0" version="update_engine-0.4.10" updaterversion="update_engine-0.4.10" installsource="scheduler" ismachine="1">
    <os version="Chateau" platform="CoreOS" sp="3975.2.0_x86_64"></os>
    <app appid="{e96281a6-d1af-4bde-9a0a-97b76e56dc57}" version="3975.2.0" track="stable" bootid="{2c7a4f26-13b5-4a9e-9c1b-5b0c8f5f0a11}" oem="qemu" oemversion="" alephversion="3815.2.0" machineid="7f2d1c0e9b8a4c5d6e7f8091a2b3c4d5" machinealias="" lang="en-US" board="amd64-usr" hardware_class="" delta_okay="false" >
        <ping active="1"></ping>
        <updatecheck></updatecheck>
        <event eventtype="3" eventresult="2" previousversion="3815.2.0"></event>
    </app>
</request>
`
	req, err := omaha.ParseRequest([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	a := req.Apps[0]
	if a.MachineID != "7f2d1c0e9b8a4c5d6e7f8091a2b3c4d5" || a.Track != "stable" || a.Board != "amd64-usr" || a.Ping == nil || a.UpdateCheck == nil {
		t.Fatalf("app %+v", a)
	}
	if len(a.Events) != 1 || a.Events[0].Type != omaha.EventTypeUpdateComplete || a.Events[0].Result != omaha.EventResultSuccessReboot || a.Events[0].PreviousVersion != "3815.2.0" {
		t.Fatalf("events %+v", a.Events)
	}
	if req.OS.ServicePack != "3975.2.0_x86_64" {
		t.Fatalf("os %+v", req.OS)
	}
}

func TestParamsValidated(t *testing.T) {
	cases := map[string]func(*omaha.Params){
		"no app id":         func(p *omaha.Params) { p.AppID = "" },
		"no version":        func(p *omaha.Params) { p.Version = "" },
		"no machine id":     func(p *omaha.Params) { p.MachineID = "" },
		"control character": func(p *omaha.Params) { p.MachineAlias = "web\n1" },
		"too long":          func(p *omaha.Params) { p.Track = strings.Repeat("x", 300) },
	}
	for name, twist := range cases {
		t.Run(name, func(t *testing.T) {
			p := params()
			twist(&p)
			if _, err := omaha.NewRequest(p, "", true, nil); !errors.Is(err, omaha.ErrInvalidParams) {
				t.Fatalf("%v, want ErrInvalidParams", err)
			}
		})
	}
	if _, err := omaha.NewRequest(params(), "", true, []omaha.Event{{Type: omaha.EventTypeUpdateComplete, Result: omaha.EventResultSuccessReboot}}); !errors.Is(err, omaha.ErrInvalidParams) {
		t.Fatalf("3/2 without previous version: %v", err)
	}
	if omaha.BoardFor("amd64") != "amd64-usr" || omaha.BoardFor("arm64") != "arm64-usr" || omaha.BoardFor("riscv64") != "" {
		t.Fatal("BoardFor")
	}
}

var (
	payloadSHA256 = bytes.Repeat([]byte{0xab}, 32)
	payloadSHA1   = bytes.Repeat([]byte{0x12}, 20)
)

// response builds an answer the way Nebraska writes one for a Flatcar
// package; edit twists the text.
func response(edit func(string) string) []byte {
	doc := `<?xml version="1.0" encoding="UTF-8"?>
<response protocol="3.0" server="nebraska"><daystart elapsed_seconds="0"></daystart>` +
		`<app appid="{e96281a6-d1af-4bde-9a0a-97b76e56dc57}" status="ok"><ping status="ok"></ping>` +
		`<updatecheck status="ok"><urls><url codebase="https://update.example.net/flatcar/amd64-usr/4152.2.0"></url></urls>` +
		`<manifest version="4152.2.0"><packages><package name="flatcar_production_update.gz" hash="SHA1" size="482304213" required="true"></package></packages>` +
		`<actions><action event="postinstall" sha256="SHA256" DisablePayloadBackoff="true"></action></actions></manifest></updatecheck></app></response>`
	doc = strings.ReplaceAll(doc, `hash="SHA1"`, `hash="`+base64.StdEncoding.EncodeToString(payloadSHA1)+`"`)
	doc = strings.ReplaceAll(doc, `sha256="SHA256"`, `sha256="`+base64.StdEncoding.EncodeToString(payloadSHA256)+`"`)
	if edit != nil {
		doc = edit(doc)
	}
	return []byte(doc)
}

func replace(old, new string) func(string) string {
	return func(s string) string {
		if !strings.Contains(s, old) {
			panic("test edit finds no " + old)
		}
		return strings.Replace(s, old, new, 1)
	}
}

func TestOfferFromResponse(t *testing.T) {
	good, err := omaha.ParseResponse(response(nil))
	if err != nil {
		t.Fatal(err)
	}
	o, err := omaha.OfferFrom(good, appID)
	if err != nil {
		t.Fatal(err)
	}
	if o.Version != "4152.2.0" || o.Size != 482304213 || !bytes.Equal(o.SHA256, payloadSHA256) || !bytes.Equal(o.SHA1, payloadSHA1) ||
		len(o.URLs) != 1 || o.URLs[0] != "https://update.example.net/flatcar/amd64-usr/4152.2.0/flatcar_production_update.gz" ||
		o.SHA256Hex() != hex.EncodeToString(payloadSHA256) {
		t.Fatalf("offer %+v", o)
	}

	sha256hex := hex.EncodeToString(payloadSHA256)
	cases := []struct {
		name string
		edit func(string) string
		want error // nil: accepted
	}{
		{"noupdate", func(string) string {
			return `<response protocol="3.0"><app appid="` + appID + `" status="ok"><updatecheck status="noupdate"></updatecheck></app></response>`
		}, omaha.ErrNoUpdate},
		{"no postinstall sha256", replace(`<action event="postinstall" sha256="`+base64.StdEncoding.EncodeToString(payloadSHA256)+`"`, `<action event="postinstall"`), omaha.ErrMissingHash},
		{"no actions at all", replace(`<actions><action event="postinstall" sha256="`+base64.StdEncoding.EncodeToString(payloadSHA256)+`" DisablePayloadBackoff="true"></action></actions>`, ``), omaha.ErrMissingHash},
		{"sha256 of another action only", replace(`event="postinstall"`, `event="update"`), omaha.ErrMissingHash},
		{"package hash_sha256 in hex instead", func(s string) string {
			s = replace(`<action event="postinstall" sha256="`+base64.StdEncoding.EncodeToString(payloadSHA256)+`"`, `<action event="postinstall"`)(s)
			return replace(`required="true"`, `required="true" hash_sha256="`+sha256hex+`"`)(s)
		}, nil},
		{"both hashes agree", replace(`required="true"`, `required="true" hash_sha256="`+base64.StdEncoding.EncodeToString(payloadSHA256)+`"`), nil},
		{"hashes disagree", replace(`required="true"`, `required="true" hash_sha256="`+strings.Repeat("0", 64)+`"`), omaha.ErrInvalidResponse},
		{"sha256 not base64", replace(`sha256="`+base64.StdEncoding.EncodeToString(payloadSHA256)+`"`, `sha256="`+sha256hex+`"`), omaha.ErrInvalidResponse},
		{"sha1 malformed", replace(`hash="`+base64.StdEncoding.EncodeToString(payloadSHA1)+`"`, `hash="nope"`), omaha.ErrInvalidResponse},
		{"size zero", replace(`size="482304213"`, `size="0"`), omaha.ErrInvalidResponse},
		{"size not a number", replace(`size="482304213"`, `size="4e8"`), omaha.ErrInvalidResponse},
		{"no url", replace(`<urls><url codebase="https://update.example.net/flatcar/amd64-usr/4152.2.0"></url></urls>`, ``), omaha.ErrInvalidResponse},
		{"file url", replace(`https://update.example.net`, `file:///etc`), omaha.ErrInvalidResponse},
		{"package name with a query", replace(`name="flatcar_production_update.gz"`, `name="x?y=1"`), omaha.ErrInvalidResponse},
		{"package name climbing", replace(`name="flatcar_production_update.gz"`, `name="../../etc/shadow"`), omaha.ErrInvalidResponse},
		{"no version", replace(`version="4152.2.0"`, `version=""`), omaha.ErrInvalidResponse},
		{"unprintable version", replace(`version="4152.2.0"`, `version="4152&#x1b;[2J"`), omaha.ErrInvalidResponse},
		{"delta", replace(`DisablePayloadBackoff="true"`, `IsDeltaPayload="true"`), omaha.ErrInvalidResponse},
		{"other app only", replace(`appid="{e96281a6-d1af-4bde-9a0a-97b76e56dc57}"`, `appid="{00000000-0000-0000-0000-000000000000}"`), omaha.ErrInvalidResponse},
		{"app id in upper case", replace(`appid="{e96281a6-d1af-4bde-9a0a-97b76e56dc57}"`, `appid="{E96281A6-D1AF-4BDE-9A0A-97B76E56DC57}"`), nil},
		{"unknown application", replace(`status="ok"><ping`, `status="error-unknownApplication"><ping`), omaha.ErrServerStatus},
		{"update check error", replace(`<updatecheck status="ok">`, `<updatecheck status="error-internal">`), omaha.ErrServerStatus},
		{"update check without status", replace(`<updatecheck status="ok">`, `<updatecheck>`), omaha.ErrInvalidResponse},
		{"no update check", func(string) string {
			return `<response protocol="3.0"><app appid="` + appID + `" status="ok"></app></response>`
		}, omaha.ErrInvalidResponse},
		{"two manifests, one target", replace(`<manifest version="4152.2.0">`,
			`<manifest version="4100.0.0" is_floor="true"><packages><package name="f.gz" size="1" hash="`+base64.StdEncoding.EncodeToString(payloadSHA1)+`"></package></packages></manifest><manifest version="4152.2.0" is_target="true">`), nil},
		{"two manifests, no target", replace(`<manifest version="4152.2.0">`, `<manifest version="4100.0.0"></manifest><manifest version="4152.2.0">`), omaha.ErrInvalidResponse},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := omaha.ParseResponse(response(c.edit))
			if err == nil {
				var o omaha.Offer
				o, err = omaha.OfferFrom(r, appID)
				if err == nil && (o.Version != "4152.2.0" || !bytes.Equal(o.SHA256, payloadSHA256)) {
					t.Fatalf("offer %+v", o)
				}
			}
			if c.want == nil && err != nil || !errors.Is(err, c.want) {
				t.Fatalf("%v, want %v", err, c.want)
			}
		})
	}
}

func TestParseResponseRefusesMalformedDocuments(t *testing.T) {
	cases := map[string]string{
		"empty":            "",
		"not xml":          "<html><body>502 Bad Gateway</body></html>",
		"wrong protocol":   `<response protocol="2.0"></response>`,
		"truncated":        string(response(nil)[:300]),
		"two roots":        string(response(nil)) + `<response protocol="3.0"></response>`,
		"text after":       string(response(nil)) + `garbage`,
		"wrong root":       `<request protocol="3.0"></request>`,
		"bad eventtype":    `<request protocol="3.0"><app appid="x"><event eventtype="x" eventresult="1"></event></app></request>`,
		"undefined entity": `<response protocol="3.0" server="&xxe;"></response>`,
	}
	for name, doc := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := omaha.ParseResponse([]byte(doc)); !errors.Is(err, omaha.ErrInvalidResponse) {
				t.Fatalf("%v, want ErrInvalidResponse", err)
			}
		})
	}
	// A trailing comment or newline is fine.
	if _, err := omaha.ParseResponse(append(response(nil), "\n<!-- served by x -->\n"...)); err != nil {
		t.Fatal(err)
	}
}

func TestClientAgainstTestServer(t *testing.T) {
	srv := omahatest.New(t, appID)
	c, err := omaha.NewClient(srv.URL, srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	c.UpdaterVersion = "offpeak-test"
	p := params()
	ctx := t.Context()

	if _, err := c.Check(ctx, p); !errors.Is(err, omaha.ErrNoUpdate) {
		t.Fatalf("no package offered: %v, want ErrNoUpdate", err)
	}
	data := []byte("the payload bytes")
	srv.Offer(omahatest.Package{Version: "4200.0.0", Data: data})
	o, err := c.Check(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if o.Version != "4200.0.0" || o.Size != int64(len(data)) || len(o.URLs) != 1 || o.URLs[0] != srv.PackageURL("update.gz") {
		t.Fatalf("offer %+v", o)
	}
	for _, ev := range []omaha.Event{omaha.EventDownloadStarted(), omaha.EventDownloaded(), omaha.EventInstalled()} {
		if err := c.Event(ctx, p, ev); err != nil {
			t.Fatal(err)
		}
	}
	// After the reboot: the check carries 3/2.
	p2 := p
	p2.Version = "4200.0.0"
	if _, err := c.Check(ctx, p2, omaha.EventUpdateComplete("4081.2.0")); err != nil {
		t.Fatal(err)
	}
	got := srv.Events(p.MachineID)
	want := []omaha.Event{omaha.EventDownloadStarted(), omaha.EventDownloaded(), omaha.EventInstalled(), omaha.EventUpdateComplete("4081.2.0")}
	if len(got) != len(want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("event %d: %v, want %v", i, got[i], want[i])
		}
	}
	recs := srv.Records()
	if len(recs) != 6 || !recs[0].Check || recs[2].Check || recs[0].App.Track != "stable" || recs[0].App.BootID != p.BootID || recs[5].App.Version != "4200.0.0" {
		t.Fatalf("records %+v", recs)
	}
	if err := c.Event(ctx, p, omaha.EventFailed(omaha.CodeRollbackError)); err != nil {
		t.Fatal(err)
	}
	if ev := srv.Events(p.MachineID); ev[len(ev)-1] != omaha.EventFailed(44) {
		t.Fatalf("last event %v", ev[len(ev)-1])
	}

	srv.Offer(omahatest.Package{Version: "4200.0.1", Data: data, NoActionSHA256: true})
	if _, err := c.Check(ctx, p); !errors.Is(err, omaha.ErrMissingHash) {
		t.Fatalf("package without sha256: %v, want ErrMissingHash", err)
	}
	srv.Offer(omahatest.Package{Version: "4200.0.1", Data: data, NoActionSHA256: true, PackageSHA256Hex: true})
	if _, err := c.Check(ctx, p); err != nil {
		t.Fatalf("package with hash_sha256 only: %v", err)
	}
	srv.FailChecks("error-internal")
	if _, err := c.Check(ctx, p); !errors.Is(err, omaha.ErrServerStatus) {
		t.Fatalf("error-internal: %v, want ErrServerStatus", err)
	}
	srv.FailHTTP(http.StatusBadGateway)
	if _, err := c.Check(ctx, p); !errors.Is(err, omaha.ErrHTTPStatus) {
		t.Fatalf("502: %v, want ErrHTTPStatus", err)
	}
	if err := c.Event(ctx, p, omaha.EventDownloaded()); !errors.Is(err, omaha.ErrHTTPStatus) {
		t.Fatalf("502 on an event: %v, want ErrHTTPStatus", err)
	}
	srv.NoUpdate()
	other := p
	other.AppID = "{11111111-2222-3333-4444-555555555555}"
	if _, err := c.Check(ctx, other); !errors.Is(err, omaha.ErrServerStatus) {
		t.Fatalf("unknown app: %v, want ErrServerStatus", err)
	}
	srv.Respond(bytes.Repeat([]byte(" "), omaha.DefaultMaxResponseBytes+1))
	if _, err := c.Check(ctx, p); !errors.Is(err, omaha.ErrResponseTooLarge) {
		t.Fatalf("huge answer: %v, want ErrResponseTooLarge", err)
	}
}

func TestClientHonoursContextAndHidesSecrets(t *testing.T) {
	block := make(chan struct{})
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-block:
		}
	}))
	defer ts.Close()
	defer close(block)
	c, err := omaha.NewClient("http://user:hunter2@"+ts.Listener.Addr().String()+"/v1/update/?key=s3cret", ts.Client())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, err := c.Check(ctx, params())
		done <- err
	}()
	cancel()
	err = <-done
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("%v, want context.Canceled", err)
	}
	if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("error shows a secret: %v", err)
	}
	for _, bad := range []string{"ftp://x/", "/v1/update", "http:///nohost"} {
		if _, err := omaha.NewClient(bad, ts.Client()); !errors.Is(err, omaha.ErrInvalidParams) {
			t.Errorf("server %q: %v", bad, err)
		}
	}
}
