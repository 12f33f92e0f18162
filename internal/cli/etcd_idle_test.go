package cli

import (
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/offpeak/offpeak/lockers/etcd/etcdtest"
	"github.com/offpeak/offpeak/scheduler"
)

// countingProxy forwards TCP to target and counts connections and bytes, so
// a test sees every request the agent (or its plugin) sends to etcd.
type countingProxy struct {
	ln    net.Listener
	conns atomic.Int64
	bytes atomic.Int64
	wg    sync.WaitGroup
}

func newCountingProxy(t *testing.T, target string) *countingProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &countingProxy{ln: ln}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.conns.Add(1)
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			go func() { n, _ := io.Copy(up, c); p.bytes.Add(n); up.Close() }()
			go func() { io.Copy(c, up); c.Close() }()
		}
	}()
	t.Cleanup(func() { ln.Close(); p.wg.Wait() })
	return p
}

// TestNoUpdateStagedNoEtcdRequests: over a simulated day with nothing
// staged, the agent sends nothing to etcd — no request, not even a
// connection. Staging an update inside a window then does reach etcd, which
// shows the counter counts.
func TestNoUpdateStagedNoEtcdRequests(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	proxy := newCountingProxy(t, strings.TrimPrefix(srv.Endpoints[0], "http://"))
	root := t.TempDir()
	pol := writeFile(t, filepath.Join(root, "policy.toml"), fmt.Sprintf(`
strategy = "window"
[node]
id = "node-a"
[lock]
plugin = "etcd"
slots = 1
[lock.config]
endpoints = ["http://%s"]
`, proxy.ln.Addr()))
	clock := fakeClock(t, "2025-06-03T00:00:00Z")
	rt, rb := agentFromFile(t, root, pol, clock)
	steps := 0
	for end := clock.Now().Add(24 * time.Hour); clock.Now().Before(end); clock.Advance(5 * time.Minute) {
		r, err := rt.agent.Step(t.Context())
		if err != nil || r.Decision != scheduler.DecisionIdle {
			t.Fatalf("%+v %v", r, err)
		}
		steps++
	}
	if n := proxy.conns.Load(); n != 0 {
		t.Fatalf("%d connections to etcd over %d passes with nothing staged", n, steps)
	}
	t.Logf("%d passes over 24h with nothing staged: 0 connections, 0 requests to etcd", steps)

	clock.Set(time.Date(2025, 6, 4, 2, 30, 0, 0, time.UTC))
	touch(t, filepath.Join(root, "run/reboot-required"))
	r, err := rt.agent.Step(t.Context())
	if err != nil || r.Decision != scheduler.DecisionReboot || rb.calls != 1 {
		t.Fatalf("%+v %v", r, err)
	}
	if proxy.conns.Load() == 0 {
		t.Fatal("the proxy counted nothing even for a staged update")
	}
}
