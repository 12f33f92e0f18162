package omaha_test

import (
	"net/url"
	"strings"
	"testing"

	"github.com/offpeak/offpeak/internal/printable"
	"github.com/offpeak/offpeak/internal/update/omaha"
)

// FuzzParseResponse: any answer is refused or gives an offer whose every
// field is usable, never a panic.
func FuzzParseResponse(f *testing.F) {
	f.Add(response(nil))
	f.Add([]byte(`<response protocol="3.0"><app appid="` + appID + `" status="ok"><updatecheck status="noupdate"></updatecheck></app></response>`))
	f.Add(response(replace(`required="true"`, `required="true" hash_sha256="`+strings.Repeat("ab", 32)+`"`)))
	f.Add([]byte(`<response protocol="3.0"><app appid="` + appID + `"><updatecheck status="ok"><urls><url codebase="http://h/"/><url codebase="https://i/x"/></urls><manifest version="1"><packages><package name="p" size="1"/></packages><actions><action event="postinstall" sha256="q80="/></actions></manifest></updatecheck></app></response>`))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := omaha.ParseResponse(b)
		if err != nil {
			return
		}
		o, err := omaha.OfferFrom(r, appID)
		if err != nil {
			return
		}
		if o.Size <= 0 || len(o.SHA256) != 32 || o.Version == "" || !printable.Is(o.Version) || len(o.URLs) == 0 {
			t.Fatalf("unusable offer %+v", o)
		}
		if o.SHA1 != nil && len(o.SHA1) != 20 {
			t.Fatalf("SHA-1 of %d bytes", len(o.SHA1))
		}
		for _, s := range o.URLs {
			u, err := url.Parse(s)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				t.Fatalf("unusable URL %q", s)
			}
		}
	})
}
