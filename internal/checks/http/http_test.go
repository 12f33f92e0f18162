package http

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	nethttp "net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/offpeak/offpeak/internal/checks/checktest"
	"github.com/offpeak/offpeak/plugins"
)

func newCheck() *Check {
	c := New(nil).(*Check)
	checktest.Clock(&c.Base)
	return c
}

func request(t testing.TB, cfg map[string]any) plugins.CheckRequest {
	t.Helper()
	return checktest.Request(t, "api", plugins.PhasePostBoot, cfg)
}

// check runs the check and requires a result, not an error.
func check(t *testing.T, ctx context.Context, cfg map[string]any) plugins.CheckResult {
	t.Helper()
	return checktest.Run(t, ctx, newCheck(), request(t, cfg))
}

func TestStatusAndBody(t *testing.T) {
	mux := nethttp.NewServeMux()
	mux.HandleFunc("GET /ok", func(w nethttp.ResponseWriter, _ *nethttp.Request) { io.WriteString(w, `{"status":"healthy"}`) })
	mux.HandleFunc("GET /down", func(w nethttp.ResponseWriter, _ *nethttp.Request) { w.WriteHeader(nethttp.StatusServiceUnavailable) })
	mux.HandleFunc("GET /empty", func(w nethttp.ResponseWriter, _ *nethttp.Request) { w.WriteHeader(nethttp.StatusNoContent) })
	mux.HandleFunc("GET /moved", func(w nethttp.ResponseWriter, r *nethttp.Request) { nethttp.Redirect(w, r, "/ok", nethttp.StatusFound) })
	mux.HandleFunc("POST /drain", func(w nethttp.ResponseWriter, _ *nethttp.Request) { io.WriteString(w, "drained") })
	mux.HandleFunc("GET /big", func(w nethttp.ResponseWriter, _ *nethttp.Request) {
		w.Write(make([]byte, MaxBody))
		io.WriteString(w, "MARKER")
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)

	tests := []struct {
		name       string
		cfg        map[string]any
		want       plugins.Outcome
		wantReason string
	}{
		{"200 passes", map[string]any{"url": srv.URL + "/ok"}, plugins.Pass, "status 200"},
		{"503 fails naming the status", map[string]any{"url": srv.URL + "/down"}, plugins.Fail, "status 503 Service Unavailable, want 200"},
		{"expected 204 passes", map[string]any{"url": srv.URL + "/empty", "expect_status": []int{200, 204}}, plugins.Pass, "status 204"},
		{"unexpected 204 fails", map[string]any{"url": srv.URL + "/empty"}, plugins.Fail, "status 204 No Content"},
		{"404 fails", map[string]any{"url": srv.URL + "/nope"}, plugins.Fail, "status 404"},
		{"redirect is not followed", map[string]any{"url": srv.URL + "/moved"}, plugins.Fail, "status 302"},
		{"redirect can be expected", map[string]any{"url": srv.URL + "/moved", "expect_status": []int{302}}, plugins.Pass, "status 302"},
		{"body regex matches", map[string]any{"url": srv.URL + "/ok", "body_regex": `"status":\s*"healthy"`}, plugins.Pass, "status 200"},
		{"body regex mismatch fails", map[string]any{"url": srv.URL + "/ok", "body_regex": `"status":"ready"`}, plugins.Fail, "body does not match"},
		{"method is used", map[string]any{"url": srv.URL + "/drain", "method": "POST", "body_regex": "^drained$"}, plugins.Pass, "POST "},
		{"body past the cap is not matched", map[string]any{"url": srv.URL + "/big", "body_regex": "MARKER"}, plugins.Fail, "body does not match"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checktest.Expect(t, check(t, t.Context(), tt.cfg), tt.want, tt.wantReason)
		})
	}
}

func TestHeadersAreSentAndSecretsStayOut(t *testing.T) {
	const token = "Bearer s3cr3t-token"
	srv := httptest.NewServer(nethttp.HandlerFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) {
		if r.Header.Get("Authorization") != token || r.Host != "api.internal" || r.Header.Get("User-Agent") != "offpeak" {
			w.WriteHeader(nethttp.StatusForbidden)
			return
		}
		w.WriteHeader(nethttp.StatusTeapot)
	}))
	t.Cleanup(srv.Close)
	u := strings.Replace(srv.URL, "http://", "http://user:hunter2@", 1) + "/health?key=qs-secret"
	res := check(t, t.Context(), map[string]any{
		"url":     u,
		"headers": map[string]string{"Authorization": token, "Host": "api.internal"},
	})
	// The server answers 418 only when it saw the headers.
	checktest.Expect(t, res, plugins.Fail, "status 418")
	all := res.Reason
	for _, v := range res.Details {
		all += " " + v
	}
	for _, secret := range []string{"s3cr3t", "hunter2", "qs-secret"} {
		if strings.Contains(all, secret) {
			t.Fatalf("secret %q leaked into result: %q", secret, all)
		}
	}
}

func TestTLS(t *testing.T) {
	srv := httptest.NewTLSServer(nethttp.HandlerFunc(func(w nethttp.ResponseWriter, _ *nethttp.Request) {}))
	t.Cleanup(srv.Close)
	// httptest servers share one built-in certificate, so a foreign CA has
	// to be made here.
	wrongCA := checktest.WritePEM(t, "wrong.pem", "CERTIFICATE", newCA(t).cert.Raw)

	tests := []struct {
		name       string
		cfg        map[string]any
		want       plugins.Outcome
		wantReason string
	}{
		{"CA file is the trust anchor", map[string]any{"url": srv.URL, "ca_file": checktest.CAFile(t, srv)}, plugins.Pass, "status 200"},
		{"wrong CA is an error", map[string]any{"url": srv.URL, "ca_file": wrongCA}, plugins.Error, "certificate"},
		{"system roots do not trust the test CA", map[string]any{"url": srv.URL}, plugins.Error, "certificate"},
		{"insecure_skip_verify passes", map[string]any{"url": srv.URL, "insecure_skip_verify": true}, plugins.Pass, "status 200"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checktest.Expect(t, check(t, t.Context(), tt.cfg), tt.want, tt.wantReason)
		})
	}
}

type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newCA(t *testing.T) testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "offpeak test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return testCA{cert, key}
}

// issueClient writes a client certificate signed by ca and its key.
func (ca testCA) issueClient(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "node-1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return checktest.WritePEM(t, "client.pem", "CERTIFICATE", der), checktest.WritePEM(t, "client-key.pem", "PRIVATE KEY", kder)
}

func TestMutualTLS(t *testing.T) {
	ca := newCA(t)
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	srv := httptest.NewUnstartedServer(nethttp.HandlerFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) {
		if len(r.TLS.PeerCertificates) == 0 || r.TLS.PeerCertificates[0].Subject.CommonName != "node-1" {
			w.WriteHeader(nethttp.StatusForbidden)
		}
	}))
	srv.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	caFile := checktest.CAFile(t, srv)
	certFile, keyFile := ca.issueClient(t)

	t.Run("client certificate is presented", func(t *testing.T) {
		res := check(t, t.Context(), map[string]any{"url": srv.URL, "ca_file": caFile, "client_cert": certFile, "client_key": keyFile})
		checktest.Expect(t, res, plugins.Pass, "status 200")
	})
	t.Run("without a client certificate the handshake fails", func(t *testing.T) {
		res := check(t, t.Context(), map[string]any{"url": srv.URL, "ca_file": caFile})
		checktest.Expect(t, res, plugins.Error, "certificate")
	})
}

func TestUnansweredIsError(t *testing.T) {
	checktest.Unanswered(t, func(t *testing.T, ctx context.Context, url string) plugins.CheckResult {
		return check(t, ctx, map[string]any{"url": url})
	})
}

func TestBadConfigIsInvalidArgument(t *testing.T) {
	ca := filepath.Join(t.TempDir(), "not-pem")
	if err := os.WriteFile(ca, []byte("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  map[string]any
	}{
		{"missing url", map[string]any{}},
		{"unsupported scheme", map[string]any{"url": "ftp://example.org/"}},
		{"relative url", map[string]any{"url": "/health"}},
		{"unknown key", map[string]any{"url": "http://127.0.0.1/", "timeout": "5s"}},
		{"bad regex", map[string]any{"url": "http://127.0.0.1/", "body_regex": "("}},
		{"bad status", map[string]any{"url": "http://127.0.0.1/", "expect_status": []int{42}}},
		{"bad method", map[string]any{"url": "http://127.0.0.1/", "method": "GET /"}},
		{"regex with HEAD", map[string]any{"url": "http://127.0.0.1/", "method": "HEAD", "body_regex": "x"}},
		{"header with newline", map[string]any{"url": "http://127.0.0.1/", "headers": map[string]string{"X-A": "a\r\nX-B: b"}}},
		{"missing ca file", map[string]any{"url": "https://127.0.0.1/", "ca_file": "/nonexistent/ca.pem"}},
		{"ca file without PEM", map[string]any{"url": "https://127.0.0.1/", "ca_file": ca}},
		{"client cert without key", map[string]any{"url": "https://127.0.0.1/", "client_cert": ca}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := newCheck().Check(t.Context(), request(t, tt.cfg))
			checktest.InvalidArgument(t, err)
		})
	}
}
