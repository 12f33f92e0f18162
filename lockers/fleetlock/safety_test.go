package fleetlock

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/offpeak/offpeak/lockers/lockertest"
	"github.com/offpeak/offpeak/plugins"
)

// postRaw sends one FleetLock request body as any client could.
func postRaw(t *testing.T, url, path, body string) (int, ErrorReply) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(HeaderProtocol, "true")
	resp, err := http.DefaultClient.Do(req)
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

// A client's clock or its word never frees another node's slot: only the
// server's clock and the server's stale_after decide staleness (#14).
func TestServerIgnoresClientClockAndReclaim(t *testing.T) {
	be := backend(t)
	t0 := time.Date(2026, 3, 1, 2, 0, 0, 0, time.UTC)
	hs := startServer(t, ServerConfig{Locker: be, Group: Groups(map[string]int{"web": 3}), Now: func() time.Time { return t0 }})
	ctx := lockertest.Ctx(t)
	for _, id := range []string{"n1", "n2", "n3"} {
		l := client(t, map[string]any{"url": hs.URL})
		h := plugins.Holder{ID: id, Hostname: id, AcquiredAt: t0, Deadline: t0.Add(time.Hour)}
		if res, err := l.Acquire(ctx, plugins.AcquireRequest{Group: "web", Slots: 3, Holder: h}); err != nil || !res.Granted {
			t.Fatalf("Acquire(%s) = %+v, %v", id, res, err)
		}
	}
	bodies := map[string]string{
		"client clock far ahead": `{"client_params":{"id":"intruder","group":"web"},"offpeak":{"reclaim_stale":true,"now":"2100-01-01T00:00:00Z"}}`,
		"reclaim with no clock":  `{"client_params":{"id":"intruder","group":"web"},"offpeak":{"reclaim_stale":true}}`,
	}
	for name, body := range bodies {
		t.Run(name, func(t *testing.T) {
			code, e := postRaw(t, hs.URL, PathPreReboot, body)
			if code != http.StatusConflict || e.Kind != KindFailedLock {
				t.Fatalf("pre-reboot = %d %+v; want 409 %s", code, e, KindFailedLock)
			}
			st, err := be.Status(ctx, "web")
			if err != nil {
				t.Fatal(err)
			}
			if got := ids(st); got != "n1,n2,n3" {
				t.Fatalf("holders after the request = %s; want the three live holders kept", got)
			}
		})
	}
}

func ids(st plugins.LockState) string {
	var s []string
	for _, h := range st.Holders {
		s = append(s, h.ID)
	}
	return strings.Join(s, ",")
}

// The offpeak client leaves staleness to the server: it sends no clock and
// no reclaim flag.
func TestClientSendsNoClockNorReclaim(t *testing.T) {
	cs := &cannedServer{replies: []canned{{200, "", ""}}}
	hs := httptest.NewServer(cs)
	defer hs.Close()
	l := client(t, map[string]any{"url": hs.URL})
	t0 := time.Date(2026, 3, 1, 2, 0, 0, 0, time.UTC)
	_, err := l.Acquire(lockertest.Ctx(t), plugins.AcquireRequest{Group: "web", Slots: 1, ReclaimStale: true, Now: t0,
		Holder: plugins.Holder{ID: "n1", Deadline: t0.Add(time.Hour)}})
	if err != nil {
		t.Fatal(err)
	}
	var sent map[string]map[string]json.RawMessage
	if err := json.Unmarshal([]byte(cs.bodies[0]), &sent); err != nil {
		t.Fatalf("request body %s: %v", cs.bodies[0], err)
	}
	for _, k := range []string{"reclaim_stale", "now"} {
		if _, ok := sent["offpeak"][k]; ok {
			t.Errorf("request body carries %q: %s", k, cs.bodies[0])
		}
	}
}

const nginxWelcome = `<!DOCTYPE html>
<html>
<head>
<title>Welcome to nginx!</title>
</head>
<body>
<h1>Welcome to nginx!</h1>
<p>If you see this page, the nginx web server is successfully installed and
working. Further configuration is required.</p>
</body>
</html>
`

// Only a FleetLock grant is a grant: a 200 from something that is not a
// FleetLock server (a web server's welcome page behind a wrong URL) is an
// error that quotes what came back.
func TestClientRefusesWhatIsNotAGrant(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		_, _ = io.WriteString(w, nginxWelcome)
	})
	mux.HandleFunc("/plain/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = io.WriteString(w, "OK\x1b]0;owned\x07\n")
	})
	mux.HandleFunc("/json/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"status":"ok"}`)
	})
	mux.HandleFunc("/moved/", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/", http.StatusFound)
	})
	hs := httptest.NewServer(mux)
	defer hs.Close()
	cases := []struct {
		name, path string
		want       []string
	}{
		{"HTML welcome page", "", []string{"not a FleetLock", "HTTP 200", "<!DOCTYPE html>", "Welcome to nginx!"}},
		{"plain text", "/plain", []string{"not a FleetLock", `OK\x1b]0;owned\a`}},
		{"JSON that is no FleetLock reply", "/json", []string{"not a FleetLock", `{\"status\":\"ok\"}`}},
		{"redirect", "/moved", []string{"HTTP 302"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := client(t, map[string]any{"url": hs.URL + c.path, "max_retries": 0})
			res, err := l.Acquire(lockertest.Ctx(t), plugins.AcquireRequest{Group: "web", Slots: 1, Holder: plugins.Holder{ID: "n1"}})
			if err == nil || res.Granted {
				t.Fatalf("Acquire = %+v, %v; want an error and no grant", res, err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if strings.ContainsAny(err.Error(), "\x1b\x07") {
				t.Errorf("error %q carries raw control characters", err)
			}
			if len(err.Error()) > 600 {
				t.Errorf("error is %d bytes long; the quote must be bounded", len(err.Error()))
			}
			if rerr := l.Release(lockertest.Ctx(t), plugins.ReleaseRequest{Group: "web", ID: "n1"}); rerr == nil {
				t.Errorf("Release against %s succeeded", c.name)
			}
		})
	}
	t.Run("offpeak's own server still grants", func(t *testing.T) {
		srv := startServer(t, ServerConfig{Locker: backend(t), Group: Groups(map[string]int{"web": 1})})
		l := client(t, map[string]any{"url": srv.URL})
		res, err := l.Acquire(lockertest.Ctx(t), plugins.AcquireRequest{Group: "web", Slots: 1, Holder: plugins.Holder{ID: "n1"}})
		if err != nil || !res.Granted {
			t.Fatalf("Acquire = %+v, %v", res, err)
		}
	})
}

// The server's own stale_after, on the server's clock, is what reclaims a
// dead holder.
func TestServerReclaimsByItsOwnClock(t *testing.T) {
	be := backend(t)
	t0 := time.Date(2026, 3, 1, 2, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	now := t0
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	hs := startServer(t, ServerConfig{Locker: be, Group: Groups(map[string]int{"web": 1}), StaleAfter: time.Hour, Now: clock})
	ctx := lockertest.Ctx(t)
	l := client(t, map[string]any{"url": hs.URL})
	// The client's own deadline far in the future does not protect it.
	if res, err := l.Acquire(ctx, plugins.AcquireRequest{Group: "web", Slots: 1, Holder: plugins.Holder{ID: "dead", Deadline: t0.AddDate(10, 0, 0)}}); err != nil || !res.Granted {
		t.Fatalf("Acquire(dead) = %+v, %v", res, err)
	}
	st, _ := be.Status(ctx, "web")
	if len(st.Holders) != 1 || !st.Holders[0].Deadline.Equal(t0.Add(time.Hour)) || !st.Holders[0].AcquiredAt.Equal(t0) {
		t.Fatalf("stored holder = %+v; want the server's acquired-at and deadline", st.Holders)
	}
	for _, c := range []struct {
		at      time.Time
		granted bool
	}{{t0.Add(59 * time.Minute), false}, {t0.Add(61 * time.Minute), true}} {
		mu.Lock()
		now = c.at
		mu.Unlock()
		res, err := l.Acquire(ctx, plugins.AcquireRequest{Group: "web", Slots: 1, Holder: plugins.Holder{ID: "next"}})
		if err != nil || res.Granted != c.granted {
			t.Fatalf("Acquire(next) at %s = %+v, %v; want granted %v", c.at, res, err, c.granted)
		}
		if c.granted && (len(res.Reclaimed) != 1 || res.Reclaimed[0].ID != "dead") {
			t.Fatalf("reclaimed %+v, want dead", res.Reclaimed)
		}
	}
}
