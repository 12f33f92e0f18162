package fleetlock

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	filelocker "github.com/offpeak/offpeak/lockers/file"
	"github.com/offpeak/offpeak/plugins"
)

// secretHolder carries what offpeak counts as a secret in a public holder
// record: a key named like one, URL user info and query values, a
// secret KEY=VALUE and a credential-shaped value.
func secretHolder(id string) plugins.Holder {
	return plugins.Holder{
		ID:       id,
		Hostname: "web-1",
		BootID:   "7b0c3d3e-0000-4000-8000-000000000001",
		Version:  "https://u:S3CR3T-version@releases.example/4152.0.0?token=S3CR3T-version-query",
		Meta: map[string]string{
			"password": "S3CR3T-meta-password",
			"source":   "registry user:S3CR3T-meta-userinfo@registry.example",
			"args":     "--api-key=S3CR3T-meta-flag",
			"auth":     "Bearer S3CR3T-meta-bearer-0123456789",
			"ticket":   "CHG-1234",
		},
	}
}

func fileBackend(t *testing.T) plugins.Locker {
	t.Helper()
	l := filelocker.New(slog.New(slog.DiscardHandler))
	raw, _ := json.Marshal(map[string]any{"dir": t.TempDir(), "poll_interval": "20ms"})
	if err := l.Configure(context.Background(), raw); err != nil {
		t.Fatal(err)
	}
	return l
}

// TestServerNeverEchoesHolderSecrets: holder records are public (every
// client of the semaphore reads them), so the server refuses a
// pre-reboot whose holder record carries a secret, naming the fields and
// not the values, and never serves an answer that echoes one from a record
// already stored (written by another tool straight into the backend).
func TestServerNeverEchoesHolderSecrets(t *testing.T) {
	be := fileBackend(t)
	hs := startServer(t, ServerConfig{Locker: be, Group: Groups(map[string]int{"web": 1}), AdminToken: adminToken})
	do := func(method, path, body string, admin bool) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, hs.URL+path, strings.NewReader(body))
		req.Header.Set("fleet-lock-protocol", "true")
		if admin {
			req.Header.Set("Authorization", "Bearer "+adminToken)
		}
		resp, err := hs.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	noSecret := func(what, body string) {
		t.Helper()
		if strings.Contains(body, "S3CR3T") {
			t.Errorf("%s echoes a secret: %s", what, body)
		}
	}

	// Ingress: refused, nothing stored.
	req, _ := json.Marshal(Request{ClientParams: ClientParams{Group: "web", ID: "node-b"}, Offpeak: &RequestExt{Holder: ptr(secretHolder("node-b"))}})
	code, body := do(http.MethodPost, PathPreReboot, string(req), false)
	if code != http.StatusBadRequest || !strings.Contains(body, "meta.password") || !strings.Contains(body, "version") {
		t.Errorf("pre-reboot with secrets in the holder record: %d %s", code, body)
	}
	noSecret("the refusal", body)
	if st, err := be.Status(context.Background(), "web"); err != nil || len(st.Holders) != 0 {
		t.Fatalf("the refused record was stored: %+v %v", st, err)
	}

	// Egress: a record stored behind the server's back.
	if _, err := be.Acquire(context.Background(), plugins.AcquireRequest{Group: "web", Slots: 1, Holder: secretHolder("node-a")}); err != nil {
		t.Fatal(err)
	}
	if err := be.Freeze(context.Background(), plugins.FreezeRequest{Group: "web", Reason: "rollback; see https://ci:S3CR3T-freeze@ci.example/job", By: "node-a", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	plain, _ := json.Marshal(Request{ClientParams: ClientParams{Group: "web", ID: "node-c"}})
	for _, c := range []struct {
		what, method, path, body string
		admin                    bool
	}{
		{"status", http.MethodGet, PathStatus + "?group=web", "", false},
		{"wait", http.MethodGet, PathWait + "?group=web&revision=0&timeout=1s", "", false},
		{"pre-reboot refused for the frozen group", http.MethodPost, PathPreReboot, string(plain), false},
		{"steady-state", http.MethodPost, PathSteadyState, string(plain), false},
		{"thaw", http.MethodPost, PathThaw, `{"group":"web"}`, true},
		{"pre-reboot refused for lack of slots", http.MethodPost, PathPreReboot, string(plain), false},
	} {
		code, body := do(c.method, c.path, c.body, c.admin)
		noSecret(c.what, body)
		if !strings.Contains(body, "node-a") || !strings.Contains(body, "CHG-1234") {
			t.Errorf("%s: %d, the holder or its harmless metadata is missing: %s", c.what, code, body)
		}
	}
}

func ptr[T any](v T) *T { return &v }
