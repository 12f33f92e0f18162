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

	filelocker "github.com/offpeak/offpeak/lockers/file"
	"github.com/offpeak/offpeak/lockers/fleetlock"
	"github.com/offpeak/offpeak/lockers/lockertest"
	"github.com/offpeak/offpeak/plugins"
	"github.com/offpeak/offpeak/scheduler"
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

// Records written before ids and hostnames were checked may hold control
// characters; every output escapes them (#14).
func TestOutputEscapesUnprintable(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "web.json"), `{"total_slots":2,"holders":["n1\u001b]0;owned\u0007","n2"],
"offpeak_holders":{"n1\u001b]0;owned\u0007":{"id":"n1\u001b]0;owned\u0007","hostname":"h\nn3  forged  -  -"}},
"revision":3}`)
	l := filelocker.New(nil)
	raw, _ := json.Marshal(map[string]any{"dir": dir})
	if err := l.Configure(context.Background(), raw); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 3, 1, 3, 0, 0, 0, time.UTC)
	var locks strings.Builder
	if err := runLocksStatus(context.Background(), &locks, l, "web", "text", now); err != nil {
		t.Fatal(err)
	}
	var status strings.Builder
	app := &App{Stdout: &status}
	printResult(app, scheduler.Result{Decision: scheduler.DecisionWaitSlot, Reason: "waiting for slot (2/2 held by n1\x1b]0;owned\x07)",
		Node: "me", Group: "web", Lock: &scheduler.LockInfo{Slots: 2, Holders: []plugins.Holder{{ID: "n1\x1b]0;owned\x07"}, {ID: "n2\nforged"}}}})
	for name, out := range map[string]string{"locks status": locks.String(), "status": status.String()} {
		if strings.ContainsAny(out, "\x1b\x07") {
			t.Errorf("%s prints raw control characters:\n%q", name, out)
		}
		if !strings.Contains(out, `n1\x1b]0;owned\a`) {
			t.Errorf("%s does not show the escaped id:\n%s", name, out)
		}
	}
	if strings.Contains(locks.String(), "\nn3  forged") {
		t.Errorf("a hostname forged a row of locks status:\n%s", locks.String())
	}
	if strings.Contains(status.String(), "\nforged") {
		t.Errorf("an id forged a line of status:\n%s", status.String())
	}
}

// The FleetLock server refuses control characters in what a client says
// about itself with a clear 400, whatever the locker behind it (#14).
func TestFleetlockServeRefusesUnprintable(t *testing.T) {
	root := t.TempDir()
	pol := writeFile(t, filepath.Join(root, "fleetlock.toml"), `
strategy = "etcd-lock"
[node]
group = "web"
[lock]
plugin = "file"
slots = 5
[lock.config]
dir = "/locks"
`)
	url := serveFleetlockPolicy(t, root, pol)
	bodies := map[string]string{
		"escape in the id":        `{"client_params":{"id":"n1\u001b]0;owned\u0007","group":"web"}}`,
		"newline in the id":       `{"client_params":{"id":"n1\nn2","group":"web"}}`,
		"NUL in the id":           `{"client_params":{"id":"n1\u0000","group":"web"}}`,
		"newline in the hostname": `{"client_params":{"id":"n1","group":"web"},"offpeak":{"holder":{"hostname":"h\nforged"}}}`,
		"escape in the boot id":   `{"client_params":{"id":"n1","group":"web"},"offpeak":{"holder":{"boot_id":"\u001b[2J"}}}`,
	}
	for name, body := range bodies {
		t.Run(name, func(t *testing.T) {
			code, e := postFleetlock(t, url, fleetlock.PathPreReboot, body)
			if code != http.StatusBadRequest || e.Kind != fleetlock.KindInvalidIdentity || !strings.Contains(e.Value, "control") {
				t.Fatalf("pre-reboot = %d %+v; want 400 %s naming the control character", code, e, fleetlock.KindInvalidIdentity)
			}
		})
	}
	b, err := os.ReadFile(filepath.Join(root, "locks", "web.json"))
	if err == nil && strings.Contains(string(b), "n1") {
		t.Fatalf("a refused request was stored: %s", b)
	}
}
