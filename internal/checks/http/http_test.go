package http

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	nethttp "net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/offpeak/offpeak/plugins"
)

var fixedNow = time.Date(2026, 3, 29, 2, 30, 0, 0, time.UTC)

func check(t *testing.T, ctx context.Context, cfg map[string]any) plugins.CheckResult {
	t.Helper()
	res, err := checkErr(ctx, cfg)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	if !res.Time.Equal(fixedNow) {
		t.Fatalf("Time = %v, want the injected clock", res.Time)
	}
	return res
}

func checkErr(ctx context.Context, cfg map[string]any) (plugins.CheckResult, error) {
	b, err := json.Marshal(cfg)
	if err != nil {
		return plugins.CheckResult{}, err
	}
	c := New(nil).(*Check)
	c.Now = func() time.Time { return fixedNow }
	return c.Check(ctx, plugins.CheckRequest{Name: "api", Phase: plugins.PhasePostBoot, Config: b})
}

// writeCA writes the certificate of a TLS test server as a PEM CA file.
func writeCA(t *testing.T, srv *httptest.Server) string {
	t.Helper()
	return writePEM(t, "ca.pem", "CERTIFICATE", srv.Certificate().Raw)
}

func writePEM(t *testing.T, name, typ string, der []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
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
			res := check(t, t.Context(), tt.cfg)
			if res.Outcome != tt.want || !strings.Contains(res.Reason, tt.wantReason) {
				t.Fatalf("got %s %q, want %s containing %q", res.Outcome, res.Reason, tt.want, tt.wantReason)
			}
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
	if res.Outcome != plugins.Fail || !strings.Contains(res.Reason, "status 418") {
		t.Fatalf("got %s %q, want the server to see the headers and answer 418", res.Outcome, res.Reason)
	}
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
	wrongCA := writePEM(t, "wrong.pem", "CERTIFICATE", newCA(t).cert.Raw)

	tests := []struct {
		name       string
		cfg        map[string]any
		want       plugins.Outcome
		wantReason string
	}{
		{"CA file is the trust anchor", map[string]any{"url": srv.URL, "ca_file": writeCA(t, srv)}, plugins.Pass, "status 200"},
		{"wrong CA is an error", map[string]any{"url": srv.URL, "ca_file": wrongCA}, plugins.Error, "certificate"},
		{"system roots do not trust the test CA", map[string]any{"url": srv.URL}, plugins.Error, "certificate"},
		{"insecure_skip_verify passes", map[string]any{"url": srv.URL, "insecure_skip_verify": true}, plugins.Pass, "status 200"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := check(t, t.Context(), tt.cfg)
			if res.Outcome != tt.want || !strings.Contains(res.Reason, tt.wantReason) {
				t.Fatalf("got %s %q, want %s containing %q", res.Outcome, res.Reason, tt.want, tt.wantReason)
			}
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
	return writePEM(t, "client.pem", "CERTIFICATE", der), writePEM(t, "client-key.pem", "PRIVATE KEY", kder)
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
	caFile := writeCA(t, srv)
	certFile, keyFile := ca.issueClient(t)

	t.Run("client certificate is presented", func(t *testing.T) {
		res := check(t, t.Context(), map[string]any{"url": srv.URL, "ca_file": caFile, "client_cert": certFile, "client_key": keyFile})
		if res.Outcome != plugins.Pass {
			t.Fatalf("got %s %q", res.Outcome, res.Reason)
		}
	})
	t.Run("without a client certificate the handshake fails", func(t *testing.T) {
		res := check(t, t.Context(), map[string]any{"url": srv.URL, "ca_file": caFile})
		if res.Outcome != plugins.Error {
			t.Fatalf("got %s %q", res.Outcome, res.Reason)
		}
	})
}

func TestTimeoutAndUnreachable(t *testing.T) {
	blocking := httptest.NewServer(nethttp.HandlerFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) {
		<-r.Context().Done() // answer only once the client gave up
	}))
	t.Cleanup(blocking.Close)
	closed := httptest.NewServer(nethttp.NotFoundHandler())
	closedURL := closed.URL
	closed.Close()

	t.Run("timeout is an error", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		defer cancel()
		res := check(t, ctx, map[string]any{"url": blocking.URL})
		if res.Outcome != plugins.Error || !strings.HasPrefix(res.Reason, "timed out after") {
			t.Fatalf("got %s %q", res.Outcome, res.Reason)
		}
	})
	t.Run("connection refused is an error", func(t *testing.T) {
		res := check(t, t.Context(), map[string]any{"url": closedURL})
		if res.Outcome != plugins.Error || !strings.Contains(res.Reason, "refused") {
			t.Fatalf("got %s %q", res.Outcome, res.Reason)
		}
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
			if _, err := checkErr(t.Context(), tt.cfg); !errors.Is(err, plugins.ErrInvalidArgument) {
				t.Fatalf("err = %v, want ErrInvalidArgument", err)
			}
		})
	}
}
