package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/offpeak/offpeak/lockers/fleetlock"
	"github.com/offpeak/offpeak/lockers/lockertest"
)

// serveFleetlockPolicy runs `offpeak fleetlock serve` on a loopback port with
// the policy pol below root and returns its base URL once it listens.
func serveFleetlockPolicy(t *testing.T, root, pol string) string {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", lockertest.FreePort(t))
	logs := &syncBuffer{}
	app := &App{Root: root, Stdout: logs, Stderr: logs, Now: time.Now, Exe: os.Args[0]}
	app.Logger = newLogger(logs, "info")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() { done <- app.Run(ctx, []string{"fleetlock", "serve", "--listen", addr, "--policy", pol}) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	select {
	case <-logs.seen("fleetlock server listening"):
	case code := <-done:
		t.Fatalf("fleetlock serve exited with %d: %s", code, logs.String())
	case <-time.After(time.Minute):
		t.Fatalf("fleetlock serve did not listen: %s", logs.String())
	}
	return "http://" + addr
}

func postFleetlock(t *testing.T, url, path, body string) (int, fleetlock.ErrorReply) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(fleetlock.HeaderProtocol, "true")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e fleetlock.ErrorReply
	if resp.StatusCode != http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
			t.Fatalf("error reply is not JSON: %v", err)
		}
	}
	return resp.StatusCode, e
}

// The server serves only the groups its policy names; a typo gets airlock's
// unknown_group and creates nothing (#14).
func TestFleetlockServeOnlyPolicyGroups(t *testing.T) {
	root := t.TempDir()
	pol := writeFile(t, filepath.Join(root, "fleetlock.toml"), `
strategy = "etcd-lock"
[node]
group = "web"
[lock]
plugin = "file"
slots = 1
[lock.config]
dir = "/locks"
`)
	url := serveFleetlockPolicy(t, root, pol)
	cases := []struct {
		name, path, group string
		code              int
		kind              string
	}{
		{"typo of the group", fleetlock.PathPreReboot, "wbe", http.StatusBadRequest, fleetlock.KindUnknownGroup},
		{"steady-state of an unknown group", fleetlock.PathSteadyState, "db", http.StatusBadRequest, fleetlock.KindUnknownGroup},
		{"the policy's group", fleetlock.PathPreReboot, "web", http.StatusOK, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, e := postFleetlock(t, url, c.path, `{"client_params":{"id":"n1","group":"`+c.group+`"}}`)
			if code != c.code || e.Kind != c.kind {
				t.Fatalf("%s %s = %d %+v; want %d %q", c.path, c.group, code, e, c.code, c.kind)
			}
		})
	}
	entries, err := os.ReadDir(filepath.Join(root, "locks"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "web.") {
			t.Errorf("the server created %s for a group its policy does not name", e.Name())
		}
	}
}
