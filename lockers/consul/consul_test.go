package consul

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/offpeak/offpeak/lockers/lockertest"
	"github.com/offpeak/offpeak/lockers/semaphore"
	"github.com/offpeak/offpeak/lockers/semaphore/storetest"
	"github.com/offpeak/offpeak/plugins"
)

// agent is a `consul agent -dev` on loopback ports.
type agent struct {
	addr string
}

// startConsul runs a dev agent, or skips the test when consul is absent.
func startConsul(t *testing.T, extraHCL string) agent {
	t.Helper()
	bin, err := exec.LookPath("consul")
	if err != nil {
		t.Skip("consul binary not on PATH; Consul is not packaged for Debian")
	}
	http := lockertest.FreePort(t)
	hcl := fmt.Sprintf(`ports { http = %d, dns = -1, grpc = -1, grpc_tls = -1, serf_lan = %d, serf_wan = %d, server = %d }`,
		http, lockertest.FreePort(t), lockertest.FreePort(t), lockertest.FreePort(t)) + "\n" + extraHCL
	cfgFile := filepath.Join(t.TempDir(), "agent.hcl")
	if err := os.WriteFile(cfgFile, []byte(hcl), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "agent", "-dev", "-bind", "127.0.0.1", "-client", "127.0.0.1",
		"-node", "offpeak-test", "-config-file", cfgFile, "-log-level", "error")
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = cmd.Wait() })
	a := agent{addr: fmt.Sprintf("127.0.0.1:%d", http)}
	// Poll the external process for a leader, with a deadline.
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := httpGet("http://" + a.addr + "/v1/status/leader")
		if err == nil && strings.Trim(resp, "\" \n") != "" {
			return a
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatal("consul agent did not elect a leader within 30s")
	return a
}

func httpGet(u string) (string, error) {
	resp, err := http.Get(u)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func configure(t *testing.T, cfg map[string]any) (*Locker, error) {
	t.Helper()
	l := newLocker(nil)
	raw, _ := json.Marshal(cfg)
	return l, l.Configure(context.Background(), raw)
}

// eachServer runs f against the in-process fake and, when a consul binary
// is on PATH, against a dev agent.
func eachServer(t *testing.T, f func(t *testing.T, addr string)) {
	t.Run("fake", func(t *testing.T) { f(t, startFake(t)) })
	t.Run("agent", func(t *testing.T) { f(t, startConsul(t, "").addr) })
}

func mustConfigure(t *testing.T, cfg map[string]any) *Locker {
	t.Helper()
	l, err := configure(t, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func rawClient(t *testing.T, addr string) *api.Client {
	t.Helper()
	c, err := api.NewClient(&api.Config{Address: addr})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func rawGet(t *testing.T, c *api.Client, key string) *api.KVPair {
	t.Helper()
	p, _, err := c.KV().Get(key, nil)
	if err != nil {
		t.Fatalf("Get %s: %v", key, err)
	}
	return p
}

func TestConformance(t *testing.T) {
	eachServer(t, func(t *testing.T, addr string) {
		lockertest.Run(t, func(t *testing.T) plugins.Locker {
			return mustConfigure(t, map[string]any{"address": addr, "prefix": "conf/" + strings.ReplaceAll(t.Name(), "/", "_")})
		})
	})
}

func TestSlotIsDurableNotSessionBound(t *testing.T) {
	eachServer(t, func(t *testing.T, addr string) {
		l := mustConfigure(t, map[string]any{"address": addr})
		ctx := lockertest.Ctx(t)
		if res, err := l.Acquire(ctx, plugins.AcquireRequest{Group: "g", Slots: 1, Holder: plugins.Holder{ID: "n1"}}); err != nil || !res.Granted {
			t.Fatalf("Acquire = %+v, %v", res, err)
		}
		raw := rawClient(t, addr)
		for _, key := range []string{"offpeak/groups/g/semaphore", "offpeak/groups/g/holders/n1"} {
			p := rawGet(t, raw, key)
			if p == nil {
				t.Fatalf("%s missing", key)
			}
			if p.Session != "" {
				t.Fatalf("%s is bound to session %s", key, p.Session)
			}
		}
		if p := rawGet(t, raw, "offpeak/groups/g/semaphore"); string(p.Value) != `{"total_slots":1,"holders":["n1"]}` {
			t.Fatalf("semaphore = %s", p.Value)
		}
	})
}

func TestMalformedSemaphoreChangesNothing(t *testing.T) {
	eachServer(t, func(t *testing.T, addr string) {
		l := mustConfigure(t, map[string]any{"address": addr})
		raw := rawClient(t, addr)
		ctx := lockertest.Ctx(t)
		for i, v := range []string{`nope`, `{"holders":[]}`, `{"total_slots":1,"holders":["a","a"]}`, `null`, `{"total_slots":1.5}`} {
			g := fmt.Sprintf("bad%d", i)
			key := "offpeak/groups/" + g + "/semaphore"
			if _, err := raw.KV().Put(&api.KVPair{Key: key, Value: []byte(v)}, nil); err != nil {
				t.Fatal(err)
			}
			before := rawGet(t, raw, key)
			for name, call := range lockertest.StateCalls(ctx, l, g) {
				if err := call(); !errors.Is(err, semaphore.ErrMalformed) || !strings.Contains(err.Error(), key) {
					t.Fatalf("%s over %s = %v, want ErrMalformed naming the key", name, v, err)
				}
			}
			after := rawGet(t, raw, key)
			if after == nil || after.ModifyIndex != before.ModifyIndex || string(after.Value) != v {
				t.Fatalf("malformed value %s was overwritten: %+v", v, after)
			}
		}
	})
}

func TestMalformedMetadataIsAnError(t *testing.T) {
	eachServer(t, func(t *testing.T, addr string) {
		l := mustConfigure(t, map[string]any{"address": addr})
		raw := rawClient(t, addr)
		ctx := lockertest.Ctx(t)
		put := func(key, v string) {
			t.Helper()
			if _, err := raw.KV().Put(&api.KVPair{Key: key, Value: []byte(v)}, nil); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := l.Acquire(ctx, plugins.AcquireRequest{Group: "g", Slots: 2, Holder: plugins.Holder{ID: "n1"}}); err != nil {
			t.Fatal(err)
		}
		put("offpeak/groups/g/holders/n1", `{"id":"someone-else"}`)
		if _, err := l.Status(ctx, "g"); !errors.Is(err, semaphore.ErrMalformed) || !strings.Contains(err.Error(), "offpeak/groups/g/holders/n1") {
			t.Fatalf("Status = %v, want ErrMalformed naming the holder key", err)
		}
		put("offpeak/groups/g/holders/n1", `{"id":"n1"}`)
		put("offpeak/groups/g/frozen", `{`)
		if _, err := l.Acquire(ctx, plugins.AcquireRequest{Group: "g", Slots: 2, Holder: plugins.Holder{ID: "n2"}}); !errors.Is(err, semaphore.ErrMalformed) {
			t.Fatalf("Acquire = %v, want ErrMalformed", err)
		}
		if p := rawGet(t, raw, "offpeak/groups/g/semaphore"); string(p.Value) != `{"total_slots":2,"holders":["n1"]}` {
			t.Fatalf("semaphore changed to %s", p.Value)
		}
	})
}

func TestStaleReclaimRecordsEvent(t *testing.T) {
	eachServer(t, func(t *testing.T, addr string) {
		l := mustConfigure(t, map[string]any{"address": addr})
		raw := rawClient(t, addr)
		ctx := lockertest.Ctx(t)
		t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		dead := plugins.Holder{ID: "dead", Hostname: "gone", AcquiredAt: t0, Deadline: t0.Add(time.Hour)}
		if _, err := l.Acquire(ctx, plugins.AcquireRequest{Group: "g", Slots: 1, Holder: dead, Now: t0}); err != nil {
			t.Fatal(err)
		}
		now := t0.Add(90 * time.Minute)
		res, err := l.Acquire(ctx, plugins.AcquireRequest{Group: "g", Slots: 1, Holder: plugins.Holder{ID: "n1"}, ReclaimStale: true, Now: now})
		if err != nil || !res.Granted || len(res.Reclaimed) != 1 || res.Reclaimed[0].ID != "dead" {
			t.Fatalf("Acquire = %+v, %v", res, err)
		}
		pairs, _, err := raw.KV().List("offpeak/groups/g/events/", nil)
		if err != nil || len(pairs) != 1 {
			t.Fatalf("events = %v, %v; want one", pairs, err)
		}
		if want := fmt.Sprintf("offpeak/groups/g/events/%020d-dead", now.UnixNano()); pairs[0].Key != want {
			t.Fatalf("event key = %s, want %s", pairs[0].Key, want)
		}
		var ev semaphore.Event
		if err := json.Unmarshal(pairs[0].Value, &ev); err != nil {
			t.Fatal(err)
		}
		if ev.Kind != "reclaim" || ev.By != "n1" || ev.Holder.ID != "dead" || ev.Holder.Hostname != "gone" || !ev.Time.Equal(now) ||
			!strings.HasPrefix(ev.Reason, "stale: deadline 2026-01-01T01:00:00Z passed") {
			t.Fatalf("event = %+v", ev)
		}
		if p := rawGet(t, raw, "offpeak/groups/g/holders/dead"); p != nil {
			t.Fatalf("reclaimed holder's metadata left: %s", p.Value)
		}
		if p := rawGet(t, raw, "offpeak/groups/g/semaphore"); string(p.Value) != `{"total_slots":1,"holders":["n1"]}` {
			t.Fatalf("semaphore = %s", p.Value)
		}
	})
}

func TestStoreGuards(t *testing.T) {
	eachServer(t, func(t *testing.T, addr string) {
		l := mustConfigure(t, map[string]any{"address": addr})
		storetest.Run(t, newStore(l.cli, l.prefix, "guards"))
	})
}

// A blocking query that times out with the index unchanged is asked again:
// Wait returns only on a change (or when ctx ends).
func TestWaitOutlastsBlockingQueries(t *testing.T) {
	eachServer(t, func(t *testing.T, addr string) {
		l := mustConfigure(t, map[string]any{"address": addr})
		l.block = 50 * time.Millisecond
		res, err := l.Acquire(lockertest.Ctx(t), plugins.AcquireRequest{Group: "g", Slots: 1, Holder: plugins.Holder{ID: "n1"}})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
		defer cancel()
		if st, err := l.Wait(ctx, "g", res.State.Revision); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Wait on an unchanged group = %+v, %v; want the deadline", st, err)
		}
	})
}

// A bad name is reported as such without a request: the answer must not
// depend on whether the agent is reachable.
func TestInvalidArgumentsNeedNoServer(t *testing.T) {
	l := mustConfigure(t, map[string]any{"address": fmt.Sprintf("127.0.0.1:%d", lockertest.FreePort(t)), "request_timeout": "2s"})
	lockertest.InvalidArguments(t, l, "g")
}

func TestACLToken(t *testing.T) {
	const root = "3f1b2c7e-0000-4000-8000-00000000beef"
	a := startConsul(t, fmt.Sprintf(`acl { enabled = true, default_policy = "deny", tokens { initial_management = %q } }`, root))
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(root+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		cfg    map[string]any
		wantOK bool
	}{
		{"token", map[string]any{"token": root}, true},
		{"token_file", map[string]any{"token_file": tokenFile}, true},
		{"no token", map[string]any{}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.cfg["address"] = a.addr
			l, err := configure(t, c.cfg)
			if err != nil {
				t.Fatal(err)
			}
			_, err = l.Acquire(lockertest.Ctx(t), plugins.AcquireRequest{Group: "acl", Slots: 5, Holder: plugins.Holder{ID: c.name}})
			if c.wantOK != (err == nil) {
				t.Fatalf("Acquire = %v, want success %v", err, c.wantOK)
			}
			if err != nil && strings.Contains(err.Error(), root) {
				t.Fatal("token appears in the error")
			}
		})
	}
}

func TestConfigValidation(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name string
		cfg  map[string]any
		ok   bool
	}{
		{"defaults", map[string]any{}, true},
		{"unknown key", map[string]any{"adress": "x:1"}, false},
		{"bad scheme", map[string]any{"scheme": "ftp"}, false},
		{"address without port", map[string]any{"address": "consul.example"}, false},
		{"tls files with http", map[string]any{"scheme": "http", "ca_file": filepath.Join(dir, "ca.pem")}, false},
		{"missing ca file", map[string]any{"ca_file": filepath.Join(dir, "missing.pem")}, false},
		{"cert without key", map[string]any{"scheme": "https", "cert_file": "c.pem"}, false},
		{"token and token_file", map[string]any{"token": "a", "token_file": "b"}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := configure(t, c.cfg)
			if c.ok != (err == nil) {
				t.Fatalf("Configure = %v, want ok %v", err, c.ok)
			}
			if err != nil && !errors.Is(err, plugins.ErrInvalidArgument) {
				t.Fatalf("Configure = %v, want ErrInvalidArgument", err)
			}
		})
	}
}

func TestUnreachableIsUnavailable(t *testing.T) {
	l, err := configure(t, map[string]any{"address": fmt.Sprintf("127.0.0.1:%d", lockertest.FreePort(t)), "request_timeout": "2s"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Status(lockertest.Ctx(t), "g"); !errors.Is(err, plugins.ErrUnavailable) {
		t.Fatalf("Status = %v, want ErrUnavailable", err)
	}
}
