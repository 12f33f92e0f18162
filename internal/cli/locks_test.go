package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	filelocker "github.com/offpeak/offpeak/lockers/file"
	"github.com/offpeak/offpeak/lockers/fleetlock"
	"github.com/offpeak/offpeak/plugins"
)

func fileLocker(t *testing.T) plugins.Locker {
	t.Helper()
	l := filelocker.New(slog.New(slog.DiscardHandler))
	raw, _ := json.Marshal(map[string]any{"dir": t.TempDir(), "poll_interval": "20ms"})
	if err := l.Configure(context.Background(), raw); err != nil {
		t.Fatal(err)
	}
	return l
}

func TestLocksStatusOutput(t *testing.T) {
	ctx := context.Background()
	l := fileLocker(t)
	now := time.Date(2026, 3, 1, 3, 0, 0, 0, time.UTC)
	at := now.Add(-90 * time.Minute)
	if _, err := l.Acquire(ctx, plugins.AcquireRequest{Group: "web", Slots: 3, Holder: plugins.Holder{
		ID: "node-a", Hostname: "web-1", AcquiredAt: at, Deadline: at.Add(time.Hour)}}); err != nil {
		t.Fatal(err)
	}
	if err := l.Freeze(ctx, plugins.FreezeRequest{Group: "web", Reason: "bad update", By: "node-a", At: now}); err != nil {
		t.Fatal(err)
	}

	t.Run("text", func(t *testing.T) {
		var out bytes.Buffer
		if err := runLocksStatus(ctx, &out, l, "web", "text", now); err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{
			"group:  web", "slots:  1 of 3 used", "frozen: yes — bad update (by node-a at 2026-03-01T03:00:00Z)",
			"ID", "HOSTNAME", "node-a", "web-1", "2026-03-01T01:30:00Z (1h30m0s ago)", "2026-03-01T02:30:00Z (passed)",
		} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("output lacks %q:\n%s", want, out.String())
			}
		}
	})
	t.Run("json", func(t *testing.T) {
		var out bytes.Buffer
		if err := runLocksStatus(ctx, &out, l, "web", "json", now); err != nil {
			t.Fatal(err)
		}
		var got struct {
			Group   string `json:"group"`
			Slots   int    `json:"slots"`
			Frozen  bool   `json:"frozen"`
			Reason  string `json:"frozen_reason"`
			Holders []struct {
				ID       string    `json:"id"`
				Hostname string    `json:"hostname"`
				Acquired time.Time `json:"acquired_at"`
				HeldFor  *float64  `json:"held_for"`
			} `json:"holders"`
			Revision *uint64 `json:"revision"`
		}
		if err := json.Unmarshal(out.Bytes(), &got); err != nil {
			t.Fatalf("%v:\n%s", err, out.String())
		}
		if got.Group != "web" || got.Slots != 3 || !got.Frozen || got.Reason != "bad update" || got.Revision == nil ||
			len(got.Holders) != 1 || got.Holders[0].ID != "node-a" || got.Holders[0].HeldFor == nil || *got.Holders[0].HeldFor != 5400 {
			t.Fatalf("json = %s", out.String())
		}
	})
	t.Run("bad output", func(t *testing.T) {
		var ee *ExitError
		if err := runLocksStatus(ctx, io.Discard, l, "web", "yaml", now); !errors.As(err, &ee) || ee.Code != 2 {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestLocksAdminCommands(t *testing.T) {
	ctx := context.Background()
	l := fileLocker(t)
	for _, id := range []string{"n1", "n2"} {
		if _, err := l.Acquire(ctx, plugins.AcquireRequest{Group: "g", Slots: 2, Holder: plugins.Holder{ID: id}}); err != nil {
			t.Fatal(err)
		}
	}
	var out bytes.Buffer
	steps := []struct {
		name     string
		run      func() error
		wantOut  string
		wantCode int
	}{
		{"set-max below holders", func() error { return runLocksSetMax(ctx, &out, l, "g", 1) }, "holders above the new count keep their slots", 0},
		{"unlock", func() error { return runLocksUnlock(ctx, &out, l, "g", "n1", "") }, "released the slot of n1", 0},
		{"unlock of a non-holder", func() error { return runLocksUnlock(ctx, &out, l, "g", "n1", "") }, "", 1},
		{"freeze needs a reason", func() error { return runLocksFreeze(ctx, &out, l, "g", "", "op", time.Now(), 1) }, "", 2},
		{"freeze", func() error { return runLocksFreeze(ctx, &out, l, "g", "investigating", "op", time.Now(), 1) }, "group g frozen: investigating", 0},
		{"thaw", func() error { return runLocksThaw(ctx, &out, l, "g") }, "group g thawed", 0},
	}
	for _, s := range steps {
		out.Reset()
		err := s.run()
		code := 0
		var ee *ExitError
		if errors.As(err, &ee) {
			code = ee.Code
		} else if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if code != s.wantCode || !strings.Contains(out.String(), s.wantOut) {
			t.Fatalf("%s: code %d (%v), output %q; want %d, %q", s.name, code, err, out.String(), s.wantCode, s.wantOut)
		}
	}
	st, err := l.Status(ctx, "g")
	if err != nil || st.Slots != 1 || len(st.Holders) != 1 || st.Holders[0].ID != "n2" || st.Frozen {
		t.Fatalf("final state %+v, %v", st, err)
	}
}

// The commands end to end, through the policy and the plugin path.
func TestLocksCommandsEndToEnd(t *testing.T) {
	root := t.TempDir()
	pol := writeFile(t, filepath.Join(root, "policy.toml"),
		"strategy = \"etcd-lock\"\n[node]\nid = \"me\"\ngroup = \"web\"\n[lock]\nplugin = \"file\"\nslots = 2\n[lock.config]\ndir = \"/locks\"\n")
	app := &App{Root: root}
	steps := []struct {
		args []string
		want string
	}{
		{[]string{"locks", "set-max", "3"}, "group web: 3 slots, 0 held"},
		{[]string{"locks", "freeze", "--reason", "hold on"}, "group web frozen: hold on"},
		{[]string{"locks", "status"}, "frozen: yes — hold on"},
		{[]string{"locks", "status", "-o", "json"}, `"frozen_reason": "hold on"`},
		{[]string{"locks", "thaw"}, "group web thawed"},
		{[]string{"locks", "status", "--group", "other"}, "group:  other"},
	}
	for _, s := range steps {
		out, errOut, code := run(t, app, append(s.args, "--policy", pol)...)
		if code != 0 || !strings.Contains(out, s.want) {
			t.Fatalf("%v: exit %d, stdout %q, stderr %q; want %q", s.args, code, out, errOut, s.want)
		}
	}
	if _, errOut, code := run(t, app, "locks", "unlock", "ghost", "--policy", pol); code != 1 || !strings.Contains(errOut, "ghost holds no slot") {
		t.Fatalf("unlock ghost: exit %d, %q", code, errOut)
	}
}

func TestFleetlockServe(t *testing.T) {
	l := fileLocker(t)
	srv, err := fleetlock.NewServer(fleetlock.ServerConfig{Locker: l, Group: fleetlock.Groups(map[string]int{"g": 1})})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serveFleetlock(ctx, slog.New(slog.DiscardHandler), ln, srv, nil) }()

	c := fleetlock.New(nil)
	raw, _ := json.Marshal(map[string]any{"url": fmt.Sprintf("http://%s/", ln.Addr())})
	if err := c.Configure(ctx, raw); err != nil {
		t.Fatal(err)
	}
	res, err := c.Acquire(ctx, plugins.AcquireRequest{Group: "g", Slots: 1, Holder: plugins.Holder{ID: "n1"}})
	if err != nil || !res.Granted {
		t.Fatalf("Acquire = %+v, %v", res, err)
	}
	if res, err := c.Acquire(ctx, plugins.AcquireRequest{Group: "g", Slots: 1, Holder: plugins.Holder{ID: "n2"}}); err != nil || res.Granted {
		t.Fatalf("second Acquire = %+v, %v; want refused", res, err)
	}
	if err := c.Release(ctx, plugins.ReleaseRequest{Group: "g", ID: "n1"}); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve returned %v after shutdown", err)
	}
}

func TestFleetlockServeFlags(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"plaintext on a public address", []string{"--listen", "0.0.0.0:0"}, "refusing to serve plain HTTP"},
		{"cert without key", []string{"--listen", "127.0.0.1:0", "--tls-cert", "c.pem"}, "--tls-cert and --tls-key go together"},
		{"client CA without TLS", []string{"--listen", "127.0.0.1:0", "--client-ca", "ca.pem"}, "--client-ca needs"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, errOut, code := run(t, &App{Root: t.TempDir()}, append([]string{"fleetlock", "serve"}, c.args...)...)
			if code != 2 || !strings.Contains(errOut, c.want) {
				t.Fatalf("exit %d, stderr %q; want 2 and %q", code, errOut, c.want)
			}
		})
	}
}

// TestLocksStatusHidesHolderSecrets: holder records are public and may have
// been written by any client; `locks status` (text and JSON) never echoes
// a secret one carries, and says that something was hidden.
func TestLocksStatusHidesHolderSecrets(t *testing.T) {
	ctx := context.Background()
	l := fileLocker(t)
	now := time.Date(2026, 3, 1, 3, 0, 0, 0, time.UTC)
	h := plugins.Holder{
		ID: "node-a", Hostname: "admin:S3CR3T-host@web-1", Version: "https://u:S3CR3T-version@releases.example/4152.0.0",
		AcquiredAt: now.Add(-time.Minute),
		Meta:       map[string]string{"token": "S3CR3T-meta-token", "note": "password=S3CR3T-meta-kv", "ticket": "CHG-1"},
	}
	if _, err := l.Acquire(ctx, plugins.AcquireRequest{Group: "web", Slots: 2, Holder: h}); err != nil {
		t.Fatal(err)
	}
	for _, format := range []string{"text", "json"} {
		var out bytes.Buffer
		if err := runLocksStatus(ctx, &out, l, "web", format, now); err != nil {
			t.Fatal(err)
		}
		if strings.Contains(out.String(), "S3CR3T") || !strings.Contains(out.String(), "node-a") || !strings.Contains(out.String(), "(redacted)") {
			t.Errorf("locks status -o %s:\n%s", format, out.String())
		}
		if format == "json" && !strings.Contains(out.String(), "CHG-1") {
			t.Errorf("harmless metadata lost:\n%s", out.String())
		}
	}
}

// TestStatusHidesHolderSecrets: the holders `check` and `status` show come
// from the lock service and may carry secrets another client wrote; they
// are never echoed.
func TestStatusHidesHolderSecrets(t *testing.T) {
	root := t.TempDir()
	touch(t, filepath.Join(root, "run/reboot-required"))
	writeFile(t, filepath.Join(root, "etc/machine-id"), "node-b\n")
	dir := filepath.Join(root, "var/lib/offpeak/locks")
	l := filelocker.New(slog.New(slog.DiscardHandler))
	raw, _ := json.Marshal(map[string]any{"dir": dir})
	if err := l.Configure(context.Background(), raw); err != nil {
		t.Fatal(err)
	}
	h := plugins.Holder{ID: "node-a", Hostname: "web-1", Version: "4152.0.0?token=S3CR3T-version", Meta: map[string]string{"api_key": "S3CR3T-meta"}}
	if _, err := l.Acquire(context.Background(), plugins.AcquireRequest{Group: "default", Slots: 1, Holder: h}); err != nil {
		t.Fatal(err)
	}
	pol := writeFile(t, filepath.Join(root, "policy.toml"), "strategy = \"etcd-lock\"\n")
	out, errOut, code := run(t, &App{Root: root, Rebooter: &recordingRebooter{}}, "check", "--policy", pol, "-o", "json")
	if code != 0 || !strings.Contains(out, "node-a") || strings.Contains(out+errOut, "S3CR3T") {
		t.Errorf("check: exit %d\n%s%s", code, out, errOut)
	}
	for _, format := range []string{"text", "json"} {
		out, errOut, code := run(t, &App{Root: root}, "status", "-o", format)
		if code != 0 || !strings.Contains(out, "node-a") || strings.Contains(out+errOut, "S3CR3T") {
			t.Errorf("status -o %s: exit %d\n%s%s", format, code, out, errOut)
		}
	}
}
