package fleetlock

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	etcdlocker "github.com/offpeak/offpeak/lockers/etcd"
	"github.com/offpeak/offpeak/lockers/etcd/etcdtest"
	"github.com/offpeak/offpeak/lockers/lockertest"
	"github.com/offpeak/offpeak/plugins"
)

const adminToken = "admin-token-for-tests"

// backend starts etcd and returns an etcd locker on it.
func backend(t *testing.T) plugins.Locker {
	t.Helper()
	srv := etcdtest.Start(t, etcdtest.Options{})
	l := etcdlocker.New(nil)
	raw, _ := json.Marshal(map[string]any{"endpoints": srv.Endpoints, "request_timeout": "5s"})
	if err := l.Configure(context.Background(), raw); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.(interface{ Close() error }).Close() })
	return l
}

// anyGroup serves every group, created with the count the client asks for.
func anyGroup(string) (int, bool) { return 0, true }

func startServer(t *testing.T, cfg ServerConfig) *httptest.Server {
	t.Helper()
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s)
	t.Cleanup(hs.Close)
	return hs
}

func client(t *testing.T, cfg map[string]any) *Locker {
	t.Helper()
	l := newLocker(nil)
	raw, _ := json.Marshal(cfg)
	if err := l.Configure(context.Background(), raw); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func TestConformanceAgainstOffpeakServer(t *testing.T) {
	hs := startServer(t, ServerConfig{Locker: backend(t), AdminToken: adminToken, Group: anyGroup})
	// The server judges staleness by its own clock and policy (none here),
	// never by what the client says.
	lockertest.RunWith(t, lockertest.Options{StaleByServer: true}, func(t *testing.T) plugins.Locker {
		return client(t, map[string]any{"url": hs.URL, "token": adminToken, "request_timeout": "5s"})
	})
}

func TestRoundTripAndBaseURLs(t *testing.T) {
	be := backend(t)
	s, err := NewServer(ServerConfig{Locker: be, Group: func(string) (int, bool) { return 2, true }})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/", s)
	mux.Handle("/fleet/", http.StripPrefix("/fleet", s))
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	cases := []struct{ name, url string }{
		{"no trailing slash", hs.URL},
		{"trailing slash", hs.URL + "/"},
		{"path prefix", hs.URL + "/fleet"},
		{"path prefix with slash", hs.URL + "/fleet/"},
	}
	ctx := lockertest.Ctx(t)
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := client(t, map[string]any{"url": c.url})
			group := fmt.Sprintf("rt%d", i)
			res, err := l.Acquire(ctx, plugins.AcquireRequest{Group: group, Slots: 1, Holder: plugins.Holder{ID: "n1", Hostname: "h1"}})
			if err != nil || !res.Granted {
				t.Fatalf("Acquire = %+v, %v", res, err)
			}
			if res.State.Slots != 2 || !res.State.Holds("n1") {
				t.Fatalf("state = %+v; want the server's 2 slots and n1", res.State)
			}
			st, err := be.Status(ctx, group)
			if err != nil || len(st.Holders) != 1 || st.Holders[0].Hostname != "h1" {
				t.Fatalf("backend state = %+v, %v; want n1 with its hostname", st, err)
			}
			if err := l.Release(ctx, plugins.ReleaseRequest{Group: group, ID: "n1"}); err != nil {
				t.Fatalf("Release: %v", err)
			}
			if st, _ := be.Status(ctx, group); len(st.Holders) != 0 {
				t.Fatalf("backend still has holders %v", st.Holders)
			}
		})
	}
}

// A plain FleetLock client (as zincati sends it) against offpeak's server.
func TestPlainFleetLockClient(t *testing.T) {
	be := backend(t)
	hs := startServer(t, ServerConfig{Locker: be, Group: Groups(map[string]int{"default": 1})})
	post := func(path, body string, header bool) (int, ErrorReply) {
		req, _ := http.NewRequest(http.MethodPost, hs.URL+path, strings.NewReader(body))
		if header {
			req.Header.Set("fleet-lock-protocol", "true")
		}
		resp, err := hs.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var e ErrorReply
		if resp.StatusCode != http.StatusOK {
			if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
				t.Fatalf("error reply of %s is not JSON: %v", path, err)
			}
		}
		return resp.StatusCode, e
	}
	body := func(id string) string {
		return `{"client_params":{"group":"default","id":"` + id + `"}}`
	}
	steps := []struct {
		name     string
		path     string
		body     string
		header   bool
		wantCode int
		wantKind string
	}{
		{"first node takes the slot", PathPreReboot, body("a"), true, 200, ""},
		{"pre-reboot is idempotent", PathPreReboot, body("a"), true, 200, ""},
		{"second node is refused", PathPreReboot, body("b"), true, 409, KindFailedLock},
		{"unknown group", PathPreReboot, `{"client_params":{"group":"other","id":"a"}}`, true, 400, KindUnknownGroup},
		{"missing header", PathPreReboot, body("b"), false, 400, KindInvalidIdentity},
		{"bad json", PathPreReboot, `{"client_params":`, true, 400, KindInvalidIdentity},
		{"empty id", PathPreReboot, `{"client_params":{"group":"default","id":""}}`, true, 400, KindInvalidIdentity},
		{"empty group", PathSteadyState, `{"client_params":{"group":"","id":"a"}}`, true, 400, KindInvalidIdentity},
		{"steady-state of a non-holder is fine", PathSteadyState, body("b"), true, 200, ""},
		{"steady-state releases", PathSteadyState, body("a"), true, 200, ""},
		{"now the second node gets it", PathPreReboot, body("b"), true, 200, ""},
		{"admin endpoint disabled without a token", PathThaw, `{"group":"default"}`, true, 403, KindAdminDisabled},
		{"unknown endpoint", "/v1/nope", `{}`, true, 404, KindNotFound},
	}
	for _, s := range steps {
		code, e := post(s.path, s.body, s.header)
		if code != s.wantCode || e.Kind != s.wantKind {
			t.Fatalf("%s: got %d %+v, want %d %q", s.name, code, e, s.wantCode, s.wantKind)
		}
		if code != 200 && e.Value == "" {
			t.Fatalf("%s: error reply without a value", s.name)
		}
	}
	resp, err := hs.Client().Get(hs.URL + PathPreReboot)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("GET pre-reboot = %d, want 405", resp.StatusCode)
	}
	big := `{"client_params":{"group":"default","id":"` + strings.Repeat("x", maxBody) + `"}}`
	if code, e := post(PathPreReboot, big, true); code != http.StatusRequestEntityTooLarge || e.Kind != KindBadRequest {
		t.Fatalf("oversized body = %d %+v", code, e)
	}
	st, err := be.Status(lockertest.Ctx(t), "default")
	if err != nil || len(st.Holders) != 1 || st.Holders[0].ID != "b" {
		t.Fatalf("backend = %+v, %v; want only b", st, err)
	}
}

func TestServerWindow(t *testing.T) {
	be := backend(t)
	var mu sync.Mutex
	open := false
	hs := startServer(t, ServerConfig{Locker: be, Group: anyGroup, Allowed: func(time.Time) bool { mu.Lock(); defer mu.Unlock(); return open }})
	l := client(t, map[string]any{"url": hs.URL})
	ctx := lockertest.Ctx(t)
	res, err := l.Acquire(ctx, plugins.AcquireRequest{Group: "w", Slots: 1, Holder: plugins.Holder{ID: "n1"}})
	if err != nil || res.Granted {
		t.Fatalf("Acquire outside the window = %+v, %v; want refused without error", res, err)
	}
	if st, _ := be.Status(ctx, "w"); len(st.Holders) != 0 || st.Slots != 0 {
		t.Fatalf("refused request changed the backend: %+v", st)
	}
	mu.Lock()
	open = true
	mu.Unlock()
	if res, err := l.Acquire(ctx, plugins.AcquireRequest{Group: "w", Slots: 1, Holder: plugins.Holder{ID: "n1"}}); err != nil || !res.Granted {
		t.Fatalf("Acquire inside the window = %+v, %v", res, err)
	}
}

func TestServerAdminToken(t *testing.T) {
	be := backend(t)
	hs := startServer(t, ServerConfig{Locker: be, AdminToken: adminToken, Group: anyGroup})
	ctx := lockertest.Ctx(t)
	cases := []struct {
		name  string
		token string
	}{
		{"no token", ""},
		{"wrong token", "guess"},
		{"right token", adminToken},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := client(t, map[string]any{"url": hs.URL, "token": c.token})
			err := l.Freeze(ctx, plugins.FreezeRequest{Group: "adm", Reason: "r", By: "t"})
			st, serr := be.Status(ctx, "adm")
			if serr != nil {
				t.Fatal(serr)
			}
			if c.token == adminToken {
				if err != nil || !st.Frozen || st.FrozenReason != "r" {
					t.Fatalf("Freeze = %v; backend %+v", err, st)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), KindUnauthorized) {
				t.Fatalf("Freeze = %v, want %s", err, KindUnauthorized)
			}
			if st.Frozen {
				t.Fatal("an unauthorized freeze reached the backend")
			}
			if _, err := l.SetSlots(ctx, "adm", 7); err == nil || !strings.Contains(err.Error(), KindUnauthorized) {
				t.Fatalf("SetSlots = %v, want %s", err, KindUnauthorized)
			}
		})
	}
}

// cannedServer answers with scripted replies and counts requests.
type cannedServer struct {
	mu      sync.Mutex
	replies []canned
	hits    int
	bodies  []string
}

type canned struct {
	code  int
	ctype string
	body  string
}

func (c *cannedServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	b := make([]byte, 4096)
	n, _ := r.Body.Read(b)
	c.bodies = append(c.bodies, string(b[:n]))
	rep := c.replies[min(c.hits, len(c.replies)-1)]
	c.hits++
	if rep.ctype != "" {
		w.Header().Set("Content-Type", rep.ctype)
	}
	w.WriteHeader(rep.code)
	_, _ = w.Write([]byte(rep.body))
}

func TestClientReplyMapping(t *testing.T) {
	airlockFull := canned{500, "text/plain; charset=utf-8", `{"kind":"failed_lock","value":"all 2 semaphore slots currently locked"}` + "\n"}
	cases := []struct {
		name       string
		replies    []canned
		granted    bool
		wantErr    error
		wantText   []string
		wantHits   int
		wantSleep  []time.Duration
		wantFrozen bool
	}{
		{name: "airlock empty 200 grants", replies: []canned{{200, "", ""}}, granted: true, wantHits: 1},
		{name: "airlock failed_lock is a refusal, not retried", replies: []canned{airlockFull}, wantHits: 1},
		{name: "outside window is a refusal", replies: []canned{{409, "application/json", `{"kind":"outside_maintenance_window","value":"closed"}`}}, wantHits: 1},
		{name: "frozen is a refusal with a frozen state", replies: []canned{{409, "application/json", `{"kind":"group_frozen","value":"group web is frozen"}`}},
			wantFrozen: true, wantHits: 1},
		{name: "invalid identity", replies: []canned{{400, "text/plain", `{"kind":"invalid_client_identity","value":"empty client ID"}`}},
			wantErr: plugins.ErrInvalidArgument, wantText: []string{"invalid_client_identity", "empty client ID"}, wantHits: 1},
		{name: "unknown group", replies: []canned{{400, "text/plain", `{"kind":"unknown_group","value":"unknown group \"x\""}`}},
			wantErr: plugins.ErrInvalidArgument, wantText: []string{"unknown_group"}, wantHits: 1},
		{name: "5xx is retried then succeeds", replies: []canned{{503, "", "busy"}, {502, "", "bad gateway"}, {200, "", ""}},
			granted: true, wantHits: 3, wantSleep: []time.Duration{375 * time.Millisecond, 750 * time.Millisecond}},
		{name: "5xx until retries run out", replies: []canned{{500, "application/json", `{"kind":"failed_sem_init","value":"etcd down"}`}},
			wantErr: plugins.ErrUnavailable, wantText: []string{"HTTP 500", "failed_sem_init", "etcd down"}, wantHits: 4,
			wantSleep: []time.Duration{375 * time.Millisecond, 750 * time.Millisecond, 1500 * time.Millisecond}},
		{name: "non-JSON error body", replies: []canned{{418, "text/html", "<h1>teapot</h1>"}},
			wantText: []string{"HTTP 418", "unexpected reply", "teapot"}, wantHits: 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cs := &cannedServer{replies: c.replies}
			hs := httptest.NewServer(cs)
			defer hs.Close()
			l := client(t, map[string]any{"url": hs.URL, "max_retries": 3})
			var sleeps []time.Duration
			l.random = func() float64 { return 0.5 }
			l.sleep = func(_ context.Context, d time.Duration) error { sleeps = append(sleeps, d); return nil }
			res, err := l.Acquire(lockertest.Ctx(t), plugins.AcquireRequest{Group: "web", Slots: 1, Holder: plugins.Holder{ID: "n1"}})
			if c.wantErr != nil && !errors.Is(err, c.wantErr) {
				t.Fatalf("err = %v, want %v", err, c.wantErr)
			}
			if c.wantErr == nil && len(c.wantText) == 0 && err != nil {
				t.Fatalf("err = %v", err)
			}
			for _, s := range c.wantText {
				if err == nil || !strings.Contains(err.Error(), s) {
					t.Fatalf("error %v does not mention %q", err, s)
				}
			}
			if res.Granted != c.granted || res.State.Frozen != c.wantFrozen {
				t.Fatalf("result = %+v, want granted %v, frozen %v", res, c.granted, c.wantFrozen)
			}
			if cs.hits != c.wantHits {
				t.Fatalf("%d requests, want %d", cs.hits, c.wantHits)
			}
			if fmt.Sprint(sleeps) != fmt.Sprint(c.wantSleep) {
				t.Fatalf("backoff sleeps = %v, want %v", sleeps, c.wantSleep)
			}
			var sent Request
			if err := json.Unmarshal([]byte(cs.bodies[0]), &sent); err != nil || sent.ClientParams != (ClientParams{ID: "n1", Group: "web"}) {
				t.Fatalf("request body = %s", cs.bodies[0])
			}
		})
	}
}

func TestClientConnectionRefusedIsRetried(t *testing.T) {
	l := client(t, map[string]any{"url": fmt.Sprintf("http://127.0.0.1:%d", lockertest.FreePort(t)), "max_retries": 2})
	var sleeps int
	l.sleep = func(context.Context, time.Duration) error { sleeps++; return nil }
	_, err := l.Acquire(lockertest.Ctx(t), plugins.AcquireRequest{Group: "g", Slots: 1, Holder: plugins.Holder{ID: "n"}})
	if !errors.Is(err, plugins.ErrUnavailable) || sleeps != 2 {
		t.Fatalf("err = %v after %d sleeps; want ErrUnavailable after 2", err, sleeps)
	}
}

func TestBackoffIsCappedAndJittered(t *testing.T) {
	cases := []struct {
		attempt int
		random  float64
		want    time.Duration
	}{
		{0, 0, 250 * time.Millisecond},
		{0, 1, 500 * time.Millisecond},
		{3, 0.5, 3 * time.Second},
		{10, 0, 15 * time.Second},
		{10, 1, 30 * time.Second},
		{200, 1, 30 * time.Second},
	}
	for _, c := range cases {
		if got := backoff(c.attempt, func() float64 { return c.random }); got != c.want {
			t.Errorf("backoff(%d, %v) = %v, want %v", c.attempt, c.random, got, c.want)
		}
	}
}

func TestClientAgainstPlainServer(t *testing.T) {
	cs := &cannedServer{replies: []canned{{404, "text/plain", "404 page not found"}}}
	hs := httptest.NewServer(cs)
	defer hs.Close()
	l := client(t, map[string]any{"url": hs.URL, "poll_interval": "2m"})
	var slept []time.Duration
	l.sleep = func(_ context.Context, d time.Duration) error { slept = append(slept, d); return nil }
	l.random = func() float64 { return 0.5 } // the middle of the ±10% jitter
	ctx := lockertest.Ctx(t)
	if _, err := l.Status(ctx, "g"); !errors.Is(err, ErrNotSupported) || !errors.Is(err, plugins.ErrUnavailable) {
		t.Fatalf("Status = %v; want ErrNotSupported and ErrUnavailable", err)
	}
	st, err := l.Wait(ctx, "g", 7)
	if err != nil || st.Revision == 7 || st.Group != "g" || !st.Opaque || st.PollInterval != 2*time.Minute {
		t.Fatalf("Wait = %+v, %v", st, err)
	}
	if len(slept) != 1 || slept[0] != 2*time.Minute {
		t.Fatalf("Wait slept %v, want one poll_interval of 2m", slept)
	}
	for name, err := range map[string]error{
		"freeze": l.Freeze(ctx, plugins.FreezeRequest{Group: "g", Reason: "r"}),
		"thaw":   l.Thaw(ctx, "g"),
	} {
		if !errors.Is(err, ErrNotSupported) {
			t.Errorf("%s = %v, want ErrNotSupported", name, err)
		}
	}
}

func TestTLS(t *testing.T) {
	be := backend(t)
	ca := lockertest.NewCA(t, "fleet")
	other := lockertest.NewCA(t, "other")
	serverPair := ca.Server(t, "server")
	clientPair := ca.Client(t, "node")
	strangerPair := other.Client(t, "stranger")
	start := func(clientCA string) *httptest.Server {
		s, err := NewServer(ServerConfig{Locker: be, Group: func(string) (int, bool) { return 10, true }})
		if err != nil {
			t.Fatal(err)
		}
		tc, err := ServerTLSConfig(serverPair.CertFile, serverPair.KeyFile, clientCA)
		if err != nil {
			t.Fatal(err)
		}
		hs := httptest.NewUnstartedServer(s)
		hs.Config.ErrorLog = log.New(io.Discard, "", 0) // failed handshakes are expected here
		hs.TLS = tc
		hs.StartTLS()
		t.Cleanup(hs.Close)
		return hs
	}
	caOnly := start("")
	mtls := start(ca.CertFile)
	cases := []struct {
		name   string
		url    string
		cfg    map[string]any
		wantOK bool
		cause  string // in the error when not OK
	}{
		{"CA-only trust", caOnly.URL, map[string]any{"ca_file": ca.CertFile}, true, ""},
		{"wrong CA", caOnly.URL, map[string]any{"ca_file": other.CertFile}, false, "certificate signed by unknown authority"},
		{"system roots do not trust a private CA", caOnly.URL, map[string]any{}, false, "certificate signed by unknown authority"},
		{"client certificate", mtls.URL, map[string]any{"ca_file": ca.CertFile, "cert_file": clientPair.CertFile, "key_file": clientPair.KeyFile}, true, ""},
		{"client certificate missing", mtls.URL, map[string]any{"ca_file": ca.CertFile}, false, "certificate required"},
		{"client certificate from another CA", mtls.URL, map[string]any{"ca_file": ca.CertFile, "cert_file": strangerPair.CertFile, "key_file": strangerPair.KeyFile}, false, "remote error: tls:"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.cfg["url"] = c.url
			c.cfg["max_retries"] = 0
			l := client(t, c.cfg)
			res, err := l.Acquire(lockertest.Ctx(t), plugins.AcquireRequest{Group: "tls", Slots: 10, Holder: plugins.Holder{ID: fmt.Sprintf("n%d", i)}})
			if c.wantOK && (err != nil || !res.Granted) {
				t.Fatalf("Acquire = %+v, %v", res, err)
			}
			if !c.wantOK && !errors.Is(err, plugins.ErrUnavailable) {
				t.Fatalf("Acquire = %+v, %v; want ErrUnavailable", res, err)
			}
			if !c.wantOK && !strings.Contains(err.Error(), c.cause) {
				t.Fatalf("Acquire = %v; want it to fail on %q", err, c.cause)
			}
		})
	}
	t.Run("TLS settings with an http URL are a config error", func(t *testing.T) {
		l := newLocker(nil)
		raw, _ := json.Marshal(map[string]any{"url": "http://127.0.0.1:1", "ca_file": ca.CertFile})
		if err := l.Configure(context.Background(), raw); !errors.Is(err, plugins.ErrInvalidArgument) {
			t.Fatalf("Configure = %v", err)
		}
	})
}

func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{
		`{"client_params":{"group":"default","id":"c988d2509fdf5cdcbed39037c56406fb"}}`,
		`{"client_params":{"group":"g","id":"a"},"offpeak":{"holder":{"id":"a","deadline":"2026-01-01T00:00:00Z"},"slots":2}}`,
		`{"client_params":{"group":"","id":""}}`, `[]`, `null`, `{"client_params":null}`, `{} {}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseRequest(b)
		if err != nil {
			return
		}
		if r.ClientParams.ID == "" || r.ClientParams.Group == "" {
			t.Fatalf("accepted %q with an empty id or group", b)
		}
		if e := r.Offpeak; e != nil && (e.Slots < 0 || (e.Holder != nil && e.Holder.ID != "" && e.Holder.ID != r.ClientParams.ID)) {
			t.Fatalf("accepted inconsistent extension %+v", e)
		}
	})
}
