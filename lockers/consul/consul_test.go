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

	"github.com/offpeak/offpeak/lockers/etcd/semaphore"
	"github.com/offpeak/offpeak/lockers/lockertest"
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

func TestConformance(t *testing.T) {
	a := startConsul(t, "")
	lockertest.Run(t, func(t *testing.T) plugins.Locker {
		l, err := configure(t, map[string]any{"address": a.addr, "prefix": "conf/" + strings.ReplaceAll(t.Name(), "/", "_")})
		if err != nil {
			t.Fatal(err)
		}
		return l
	})
}

func TestSlotIsDurableNotSessionBound(t *testing.T) {
	a := startConsul(t, "")
	l, err := configure(t, map[string]any{"address": a.addr})
	if err != nil {
		t.Fatal(err)
	}
	ctx := lockertest.Ctx(t)
	if _, err := l.Acquire(ctx, plugins.AcquireRequest{Group: "g", Slots: 1, Holder: plugins.Holder{ID: "n1"}}); err != nil {
		t.Fatal(err)
	}
	raw, _ := api.NewClient(&api.Config{Address: a.addr})
	for _, key := range []string{"offpeak/groups/g/semaphore", "offpeak/groups/g/holders/n1"} {
		p, _, err := raw.KV().Get(key, nil)
		if err != nil || p == nil {
			t.Fatalf("Get %s = %v, %v", key, p, err)
		}
		if p.Session != "" {
			t.Fatalf("%s is bound to session %s", key, p.Session)
		}
	}
	p, _, _ := raw.KV().Get("offpeak/groups/g/semaphore", nil)
	if string(p.Value) != `{"total_slots":1,"holders":["n1"]}` {
		t.Fatalf("semaphore = %s", p.Value)
	}
}

func TestMalformedSemaphoreChangesNothing(t *testing.T) {
	a := startConsul(t, "")
	l, err := configure(t, map[string]any{"address": a.addr})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := api.NewClient(&api.Config{Address: a.addr})
	ctx := lockertest.Ctx(t)
	for i, v := range []string{`nope`, `{"holders":[]}`, `{"total_slots":1,"holders":["a","a"]}`} {
		g := fmt.Sprintf("bad%d", i)
		key := "offpeak/groups/" + g + "/semaphore"
		if _, err := raw.KV().Put(&api.KVPair{Key: key, Value: []byte(v)}, nil); err != nil {
			t.Fatal(err)
		}
		before, _, _ := raw.KV().Get(key, nil)
		_, err := l.Acquire(ctx, plugins.AcquireRequest{Group: g, Slots: 1, Holder: plugins.Holder{ID: "n1"}})
		if !errors.Is(err, semaphore.ErrMalformed) || !strings.Contains(err.Error(), key) {
			t.Fatalf("Acquire over %s = %v, want ErrMalformed naming the key", v, err)
		}
		after, _, _ := raw.KV().Get(key, nil)
		if after.ModifyIndex != before.ModifyIndex {
			t.Fatalf("malformed value was overwritten: %s", after.Value)
		}
	}
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
