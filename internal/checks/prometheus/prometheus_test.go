package prometheus

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	nethttp "net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
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
	return checktest.Request(t, "alerts", plugins.PhasePreReboot, cfg)
}

// check runs the check and requires a result, not an error.
func check(t *testing.T, ctx context.Context, cfg map[string]any) plugins.CheckResult {
	t.Helper()
	return checktest.Run(t, ctx, newCheck(), request(t, cfg))
}

const rules = `groups:
  - name: offpeak-test
    interval: 1s
    rules:
      - alert: AlwaysFiring
        expr: vector(1)
        for: 0s
        labels:
          severity: critical
          team: infra
        annotations:
          summary: fires at the first evaluation
      - alert: AlwaysPending
        expr: vector(1)
        for: 1h
        labels:
          severity: warning
`

// syncBuffer collects the server's output for failure messages.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type promServer struct {
	URL  string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
}

// stop kills the server and waits for it; safe to call twice.
func (p *promServer) stop() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startPrometheus runs the system's Prometheus on loopback with the two
// test alerts and returns once AlwaysFiring fires and AlwaysPending pends.
func startPrometheus(t *testing.T) *promServer {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		if _, statErr := os.Stat("/usr/bin/prometheus"); statErr != nil {
			t.Skip("prometheus binary not found (Debian package \"prometheus\"); skipping the test against a real server")
		}
		bin = "/usr/bin/prometheus"
	}
	dir := t.TempDir()
	ruleFile := filepath.Join(dir, "rules.yml")
	if err := os.WriteFile(ruleFile, []byte(rules), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf("global:\n  evaluation_interval: 1s\nrule_files:\n  - %s\n", ruleFile)
	confFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(confFile, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	// The free port is found before Prometheus binds it, so another
	// process may take it first; try again with a new port in that case.
	for attempt := 1; ; attempt++ {
		p, err := launch(t, bin, dir, confFile)
		if err == nil {
			return p
		}
		if !errors.Is(err, errPortTaken) || attempt == 3 {
			t.Fatal(err)
		}
	}
}

var errPortTaken = errors.New("listen address in use")

func launch(t *testing.T, bin, dir, confFile string) (*promServer, error) {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	out := &syncBuffer{}
	cmd := exec.Command(bin,
		"--config.file="+confFile,
		"--storage.tsdb.path="+filepath.Join(dir, "data-"+strings.ReplaceAll(addr, ":", "_")),
		"--web.listen-address="+addr,
		"--log.level=warn",
	)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting prometheus: %w", err)
	}
	p := &promServer{URL: "http://" + addr, cmd: cmd, out: out, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	t.Cleanup(p.stop)

	// Waiting on an external process: poll its API with a deadline.
	deadline := time.After(60 * time.Second)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-p.done:
			if strings.Contains(out.String(), "address already in use") {
				return nil, errPortTaken
			}
			return nil, fmt.Errorf("prometheus exited early:\n%s", out.String())
		case <-deadline:
			return nil, fmt.Errorf("prometheus did not report the test alerts in time:\n%s", out.String())
		case <-tick.C:
		}
		if alertsReady(p.URL) {
			return p, nil
		}
	}
}

func alertsReady(base string) bool {
	resp, err := nethttp.Get(base + "/api/v1/alerts")
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	alerts, err := parseAlerts(body)
	if err != nil {
		return false
	}
	var firing, pending bool
	for _, a := range alerts {
		firing = firing || a.Labels["alertname"] == "AlwaysFiring" && a.State == StateFiring
		pending = pending || a.Labels["alertname"] == "AlwaysPending" && a.State == StatePending
	}
	return firing && pending
}

func TestAgainstPrometheus(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Prometheus server")
	}
	prom := startPrometheus(t)
	tests := []struct {
		name       string
		cfg        map[string]any
		want       plugins.Outcome
		wantReason string
	}{
		{"no filter counts every firing alert", map[string]any{}, plugins.Fail, "firing: AlwaysFiring"},
		{"no filter with include_pending counts both", map[string]any{"include_pending": true}, plugins.Fail, "alerts firing: AlwaysFiring; pending: AlwaysPending"},
		{"matching label fails", map[string]any{"match": map[string]string{"severity": "critical"}}, plugins.Fail, "firing: AlwaysFiring"},
		{"all match labels must agree", map[string]any{"match": map[string]string{"severity": "critical", "team": "web"}}, plugins.Pass, "no matching alert"},
		{"filter matching nothing passes", map[string]any{"match": map[string]string{"severity": "page"}}, plugins.Pass, "no matching alert firing"},
		{"pending alert ignored by default", map[string]any{"match": map[string]string{"alertname": "AlwaysPending"}}, plugins.Pass, "no matching alert firing"},
		{"include_pending counts the pending alert", map[string]any{"match": map[string]string{"alertname": "AlwaysPending"}, "include_pending": true}, plugins.Fail, "pending: AlwaysPending"},
		{"regex is anchored", map[string]any{"match_regex": map[string]string{"severity": "crit"}}, plugins.Pass, "no matching alert"},
		{"regex matches", map[string]any{"match_regex": map[string]string{"severity": "crit.*|page"}}, plugins.Fail, "firing: AlwaysFiring"},
		{"ignored alertname does not count", map[string]any{"ignore": []string{"AlwaysFiring"}}, plugins.Pass, "no matching alert"},
		{"missing label reads as empty", map[string]any{"match": map[string]string{"owner": ""}}, plugins.Fail, "AlwaysFiring"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := map[string]any{"url": prom.URL}
			for k, v := range tt.cfg {
				cfg[k] = v
			}
			res := check(t, t.Context(), cfg)
			checktest.Expect(t, res, tt.want, tt.wantReason)
			// The server always has the two test alerts active; a pass
			// must have counted none of them, a failure at least one.
			if res.Details["active"] != "2" || (res.Details["matching"] == "0") != (tt.want == plugins.Pass) {
				t.Fatalf("details %v, want 2 active and matching > 0 exactly when failing", res.Details)
			}
		})
	}

	t.Run("wrong path prefix is an error", func(t *testing.T) {
		res := check(t, t.Context(), map[string]any{"url": prom.URL + "/no-such-prefix/", "match": map[string]string{"severity": "page"}})
		checktest.Expect(t, res, plugins.Error, "status 404")
	})
	t.Run("stopped server is an error", func(t *testing.T) {
		prom.stop()
		res := check(t, t.Context(), map[string]any{"url": prom.URL, "match": map[string]string{"severity": "page"}})
		checktest.Expect(t, res, plugins.Error, "refused")
	})
}

const okDoc = `{"status":"success","data":{"alerts":[
 {"labels":{"alertname":"DiskFull","severity":"critical"},"annotations":{},"state":"firing","activeAt":"2026-03-29T01:00:00Z","value":"1e+00"},
 {"labels":{"alertname":"Slow"},"state":"pending","activeAt":"2026-03-29T01:00:00.123456789Z","value":"2"}]}}`

func TestBadAnswersAreErrors(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		body       string
		wantReason string
	}{
		{"query error status", 200, `{"status":"error","errorType":"timeout","error":"query timed out"}`, "query timed out"},
		{"non-200 with an error document", 503, `{"status":"error","errorType":"unavailable","error":"not ready"}`, "status 503: status \"error\": unavailable: not ready"},
		{"non-200 with text", 502, `bad gateway`, "status 502"},
		{"non-200 even with alerts", 500, okDoc, "status 500"},
		{"malformed JSON", 200, `{"status":"success","data":{"alerts":[`, "bad alerts response"},
		{"HTML", 200, `<html>login</html>`, "bad alerts response"},
		{"missing data", 200, `{"status":"success"}`, "no data.alerts"},
		{"null alerts", 200, `{"status":"success","data":{"alerts":null}}`, "no data.alerts"},
		{"unknown state", 200, `{"status":"success","data":{"alerts":[{"labels":{},"state":"exploded"}]}}`, "unknown state"},
		{"labels of wrong type", 200, `{"status":"success","data":{"alerts":[{"labels":[],"state":"firing"}]}}`, "bad alerts response"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(nethttp.HandlerFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) {
				if r.URL.Path != "/prom/api/v1/alerts" {
					nethttp.NotFound(w, r)
					return
				}
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body)
			}))
			t.Cleanup(srv.Close)
			// match nothing, so that only an error can keep this from passing
			res := check(t, t.Context(), map[string]any{"url": srv.URL + "/prom/", "match": map[string]string{"alertname": "None"}})
			checktest.Expect(t, res, plugins.Error, tt.wantReason)
		})
	}
}

func TestBearerTokenAndCA(t *testing.T) {
	const token = "tok-3f9a-secret"
	srv := httptest.NewTLSServer(nethttp.HandlerFunc(func(w nethttp.ResponseWriter, r *nethttp.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token {
			w.WriteHeader(nethttp.StatusUnauthorized)
			io.WriteString(w, `{"status":"error","errorType":"auth","error":"unauthorized"}`)
			return
		}
		io.WriteString(w, okDoc)
	}))
	t.Cleanup(srv.Close)
	dir := t.TempDir()
	caFile := checktest.CAFile(t, srv)
	tokFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	wrongTok := filepath.Join(dir, "wrong")
	if err := os.WriteFile(wrongTok, []byte("nope"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		cfg        map[string]any
		want       plugins.Outcome
		wantReason string
	}{
		{"token and CA", map[string]any{"bearer_token_file": tokFile, "ca_file": caFile}, plugins.Fail, "firing: DiskFull"},
		{"pending counted when asked", map[string]any{"bearer_token_file": tokFile, "ca_file": caFile, "include_pending": true}, plugins.Fail, "firing: DiskFull; pending: Slow"},
		{"rejected token is an error", map[string]any{"bearer_token_file": wrongTok, "ca_file": caFile}, plugins.Error, "status 401"},
		{"untrusted server is an error", map[string]any{"bearer_token_file": tokFile}, plugins.Error, "certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg["url"] = srv.URL
			res := check(t, t.Context(), tt.cfg)
			checktest.Expect(t, res, tt.want, tt.wantReason)
			if strings.Contains(fmt.Sprint(res), token) {
				t.Fatalf("token leaked into the result: %+v", res)
			}
		})
	}
}

func TestUnansweredIsError(t *testing.T) {
	checktest.Unanswered(t, func(t *testing.T, ctx context.Context, url string) plugins.CheckResult {
		return check(t, ctx, map[string]any{"url": url})
	})
}

func TestBadConfigIsInvalidArgument(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  map[string]any
	}{
		{"missing url", map[string]any{}},
		{"bad scheme", map[string]any{"url": "unix:///run/prom.sock"}},
		{"unknown key", map[string]any{"url": "http://127.0.0.1:9090", "matches": map[string]string{}}},
		{"bad regex", map[string]any{"url": "http://127.0.0.1:9090", "match_regex": map[string]string{"a": "("}}},
		{"missing token file", map[string]any{"url": "http://127.0.0.1:9090", "bearer_token_file": filepath.Join(dir, "absent")}},
		{"empty token file", map[string]any{"url": "http://127.0.0.1:9090", "bearer_token_file": empty}},
		{"missing ca file", map[string]any{"url": "https://127.0.0.1:9090", "ca_file": filepath.Join(dir, "absent")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := newCheck().Check(t.Context(), request(t, tt.cfg))
			checktest.InvalidArgument(t, err)
		})
	}
}

func TestReasonListIsBounded(t *testing.T) {
	var alerts []Alert
	for i := range 200 {
		alerts = append(alerts, Alert{Labels: map[string]string{"alertname": fmt.Sprintf("Alert%03d", i)}, State: StateFiring})
		alerts = append(alerts, Alert{Labels: map[string]string{"alertname": fmt.Sprintf("Alert%03d", i)}, State: StateFiring})
	}
	res := newCheck().verdict(alerts, &filter{})
	if res.Outcome != plugins.Fail || len(res.Reason) > 400 || !strings.Contains(res.Reason, "more)") {
		t.Fatalf("got %s %q", res.Outcome, res.Reason)
	}
	if strings.Count(res.Reason, "Alert000") != 1 {
		t.Fatalf("duplicate series listed twice: %q", res.Reason)
	}
}

func FuzzParseAlerts(f *testing.F) {
	f.Add([]byte(okDoc))
	f.Add([]byte(`{"status":"success","data":{"alerts":[]}}`))
	f.Add([]byte(`{"status":"error","errorType":"bad_data","error":"x"}`))
	f.Add([]byte(`{"status":"success","data":{"alerts":[{"labels":null,"state":"inactive"}]}}`))
	f.Add([]byte(`{"status":"success","data":{}}`))
	f.Add([]byte(`null`))
	f.Add([]byte(`{"status":"success","data":{"alerts":[{"labels":{"a":"\u00ff"},"state":"firing"}]}} trailing`))
	f.Fuzz(func(t *testing.T, body []byte) {
		alerts, err := parseAlerts(body)
		if err != nil {
			if !errors.Is(err, ErrBadResponse) {
				t.Fatalf("error %v does not wrap ErrBadResponse", err)
			}
			return
		}
		for _, a := range alerts {
			if a.State != StateFiring && a.State != StatePending && a.State != StateInactive {
				t.Fatalf("accepted unknown state %q", a.State)
			}
		}
		// What was accepted must survive a round trip unchanged.
		doc, err := json.Marshal(map[string]any{"status": "success", "data": map[string]any{"alerts": alerts}})
		if err != nil {
			t.Fatal(err)
		}
		again, err := parseAlerts(doc)
		if err != nil || len(again) != len(alerts) {
			t.Fatalf("round trip: %v, %d vs %d alerts", err, len(again), len(alerts))
		}
		// The verdict never panics and never passes with a counted alert.
		res := New(nil).(*Check).verdict(alerts, &filter{includePending: true})
		if res.Outcome == plugins.Pass && countActive(alerts) > 0 {
			t.Fatalf("pass with %d active alerts", countActive(alerts))
		}
	})
}
