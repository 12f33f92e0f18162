package etcd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/offpeak/offpeak/lockers/etcd/etcdtest"
	"github.com/offpeak/offpeak/lockers/lockertest"
	"github.com/offpeak/offpeak/lockers/semaphore"
	"github.com/offpeak/offpeak/lockers/semaphore/storetest"
	"github.com/offpeak/offpeak/plugins"
)

func configure(t testing.TB, cfg map[string]any) (*Locker, error) {
	t.Helper()
	l := newLocker(nil)
	raw, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Configure(context.Background(), raw); err != nil {
		return nil, err
	}
	t.Cleanup(func() { _ = l.Close() })
	return l, nil
}

func newTestLocker(t testing.TB, srv *etcdtest.Server, extra map[string]any) *Locker {
	t.Helper()
	cfg := map[string]any{"endpoints": srv.Endpoints, "request_timeout": "5s"}
	for k, v := range extra {
		cfg[k] = v
	}
	l, err := configure(t, cfg)
	if err != nil {
		t.Fatalf("Configure: %v", err)
	}
	return l
}

func rawClient(t testing.TB, endpoints []string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

func rawGet(t testing.TB, cli *clientv3.Client, key string) (string, int64) {
	t.Helper()
	resp, err := cli.Get(lockertest.Ctx(t), key)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return "", 0
	}
	return string(resp.Kvs[0].Value), resp.Kvs[0].ModRevision
}

func TestConformance(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	lockertest.Run(t, func(t *testing.T) plugins.Locker {
		return newTestLocker(t, srv, map[string]any{"prefix": "conf-" + strings.ReplaceAll(t.Name(), "/", "_") + "/"})
	})
}

// airlockSemaphore is the schema airlock decodes the value with.
type airlockSemaphore struct {
	TotalSlots uint64   `json:"total_slots"`
	Holders    []string `json:"holders"`
}

func decodeAirlock(t *testing.T, raw string) airlockSemaphore {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(raw))
	dec.DisallowUnknownFields()
	var s airlockSemaphore
	if err := dec.Decode(&s); err != nil {
		t.Fatalf("value %s does not decode with airlock's schema: %v", raw, err)
	}
	return s
}

func TestAirlockInterop(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	cli := rawClient(t, srv.Endpoints)
	l := newTestLocker(t, srv, nil)
	ctx := lockertest.Ctx(t)

	t.Run("reads and updates a value airlock wrote", func(t *testing.T) {
		const g = "web"
		key := "com.coreos.airlock/groups/web/v1/semaphore"
		if _, err := cli.Put(ctx, key, `{"total_slots":2,"holders":["node-a"]}`); err != nil {
			t.Fatal(err)
		}
		st, err := l.Status(ctx, g)
		if err != nil {
			t.Fatalf("Status: %v", err)
		}
		if st.Slots != 2 || len(st.Holders) != 1 || st.Holders[0].ID != "node-a" || st.Holders[0].Hostname != "" {
			t.Fatalf("status of airlock's value = %+v", st)
		}
		res, err := l.Acquire(ctx, plugins.AcquireRequest{Group: g, Slots: 9, Holder: plugins.Holder{ID: "node-b", Hostname: "b"}})
		if err != nil || !res.Granted {
			t.Fatalf("Acquire = %+v, %v", res, err)
		}
		raw, _ := rawGet(t, cli, key)
		if raw != `{"total_slots":2,"holders":["node-a","node-b"]}` {
			t.Fatalf("value after acquire = %s", raw)
		}
		if s := decodeAirlock(t, raw); s.TotalSlots != 2 || len(s.Holders) != 2 {
			t.Fatalf("decoded %+v", s)
		}
		if err := l.Release(ctx, plugins.ReleaseRequest{Group: g, ID: "node-a", Reason: "airlock node done"}); err != nil {
			t.Fatalf("Release(node-a): %v", err)
		}
		raw, _ = rawGet(t, cli, key)
		if raw != `{"total_slots":2,"holders":["node-b"]}` {
			t.Fatalf("value after release = %s", raw)
		}
		st, err = l.Status(ctx, g)
		if err != nil || len(st.Holders) != 1 || st.Holders[0].Hostname != "b" {
			t.Fatalf("status = %+v, %v; want node-b with its metadata", st, err)
		}
	})

	t.Run("value offpeak creates decodes with airlock's schema", func(t *testing.T) {
		const g = "eu/db"
		if _, err := l.Acquire(ctx, plugins.AcquireRequest{Group: g, Slots: 3, Holder: plugins.Holder{ID: "n2"}}); err != nil {
			t.Fatal(err)
		}
		if _, err := l.Acquire(ctx, plugins.AcquireRequest{Group: g, Slots: 3, Holder: plugins.Holder{ID: "n1"}}); err != nil {
			t.Fatal(err)
		}
		// airlock query-escapes the group in the key.
		raw, _ := rawGet(t, cli, "com.coreos.airlock/groups/eu%2Fdb/v1/semaphore")
		if raw != `{"total_slots":3,"holders":["n1","n2"]}` {
			t.Fatalf("raw value = %q; want sorted holders, airlock's field order", raw)
		}
		decodeAirlock(t, raw)
	})

	t.Run("Wait wakes when airlock changes the semaphore", func(t *testing.T) {
		const g = "fleet"
		key := semaphore.AirlockKey(g)
		res, err := l.Acquire(ctx, plugins.AcquireRequest{Group: g, Slots: 1, Holder: plugins.Holder{ID: "offpeak-node", Hostname: "o"}})
		if err != nil || !res.Granted {
			t.Fatalf("Acquire = %+v, %v", res, err)
		}
		// airlock's steady-state for the node: it rewrites the value alone
		// and knows nothing of offpeak's metadata.
		if _, err := cli.Put(ctx, key, `{"total_slots":1,"holders":[]}`); err != nil {
			t.Fatal(err)
		}
		st, err := l.Wait(ctx, g, res.State.Revision)
		if err != nil || st.Holds("offpeak-node") || st.Slots != 1 || st.Revision <= res.State.Revision {
			t.Fatalf("Wait = %+v, %v; want the slot freed by airlock", st, err)
		}
		// The metadata left behind does not bring the holder back, and the
		// freed slot goes to the next node.
		res, err = l.Acquire(ctx, plugins.AcquireRequest{Group: g, Slots: 1, Holder: plugins.Holder{ID: "next"}})
		if err != nil || !res.Granted || res.State.Holds("offpeak-node") {
			t.Fatalf("Acquire(next) = %+v, %v", res, err)
		}
		if raw, _ := rawGet(t, cli, key); raw != `{"total_slots":1,"holders":["next"]}` {
			t.Fatalf("raw value = %s", raw)
		}
	})

	t.Run("fields written by other tools are preserved", func(t *testing.T) {
		key := semaphore.AirlockKey("extra")
		if _, err := cli.Put(ctx, key, `{"total_slots":1,"holders":[],"note":{"by":"ops"}}`); err != nil {
			t.Fatal(err)
		}
		if _, err := l.Acquire(ctx, plugins.AcquireRequest{Group: "extra", Slots: 1, Holder: plugins.Holder{ID: "n1"}}); err != nil {
			t.Fatal(err)
		}
		raw, _ := rawGet(t, cli, key)
		if raw != `{"total_slots":1,"holders":["n1"],"note":{"by":"ops"}}` {
			t.Fatalf("raw value = %s", raw)
		}
	})
}

func TestMalformedSemaphoreChangesNothing(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	cli := rawClient(t, srv.Endpoints)
	l := newTestLocker(t, srv, nil)
	ctx := lockertest.Ctx(t)
	cases := []struct{ name, value string }{
		{"not json", `not json`},
		{"array", `[]`},
		{"null", `null`},
		{"no total_slots", `{"holders":[]}`},
		{"negative slots", `{"total_slots":-1,"holders":[]}`},
		{"string slots", `{"total_slots":"2","holders":[]}`},
		{"fractional slots", `{"total_slots":1.5,"holders":[]}`},
		{"holders not a list", `{"total_slots":2,"holders":"a"}`},
		{"holder not a string", `{"total_slots":2,"holders":[1]}`},
		{"duplicate holder", `{"total_slots":2,"holders":["a","a"]}`},
		{"empty holder", `{"total_slots":2,"holders":[""]}`},
		{"trailing data", `{"total_slots":2,"holders":[]}{}`},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			g := "bad" + string(rune('a'+i))
			key := semaphore.AirlockKey(g)
			if _, err := cli.Put(ctx, key, c.value); err != nil {
				t.Fatal(err)
			}
			_, rev := rawGet(t, cli, key)
			for name, call := range lockertest.StateCalls(ctx, l, g) {
				err := call()
				if !errors.Is(err, semaphore.ErrMalformed) {
					t.Fatalf("%s = %v, want ErrMalformed", name, err)
				}
				if !strings.Contains(err.Error(), key) {
					t.Fatalf("%s error %q does not name the key", name, err)
				}
			}
			if raw, r := rawGet(t, cli, key); raw != c.value || r != rev {
				t.Fatalf("value changed to %q (rev %d→%d)", raw, rev, r)
			}
		})
	}
}

func TestMalformedMetadataIsAnError(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	cli := rawClient(t, srv.Endpoints)
	l := newTestLocker(t, srv, nil)
	ctx := lockertest.Ctx(t)
	if _, err := l.Acquire(ctx, plugins.AcquireRequest{Group: "g", Slots: 1, Holder: plugins.Holder{ID: "n1"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "offpeak/groups/g/holders/n1", `{"id":"someone-else"}`); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Status(ctx, "g"); !errors.Is(err, semaphore.ErrMalformed) {
		t.Fatalf("Status = %v, want ErrMalformed", err)
	}
	if _, err := cli.Put(ctx, "offpeak/groups/g/frozen", `{`); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "offpeak/groups/g/holders/n1", `{"id":"n1"}`); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Acquire(ctx, plugins.AcquireRequest{Group: "g", Slots: 1, Holder: plugins.Holder{ID: "n2"}}); !errors.Is(err, semaphore.ErrMalformed) {
		t.Fatalf("Acquire = %v, want ErrMalformed", err)
	}
}

func TestOperatorUnlockFreesExactlyThatSlot(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	cli := rawClient(t, srv.Endpoints)
	l := newTestLocker(t, srv, nil)
	ctx := lockertest.Ctx(t)
	for _, id := range []string{"n1", "n2", "n3"} {
		if res, err := l.Acquire(ctx, plugins.AcquireRequest{Group: "g", Slots: 3, Holder: plugins.Holder{ID: id, Hostname: id + ".example"}}); err != nil || !res.Granted {
			t.Fatalf("Acquire(%s) = %+v, %v", id, res, err)
		}
	}
	metaRevs := map[string]int64{}
	for _, id := range []string{"n1", "n3"} {
		_, metaRevs[id] = rawGet(t, cli, "offpeak/groups/g/holders/"+id)
	}
	if err := l.Release(ctx, plugins.ReleaseRequest{Group: "g", ID: "n2", Reason: "unlock by admin"}); err != nil {
		t.Fatalf("unlock: %v", err)
	}
	raw, _ := rawGet(t, cli, semaphore.AirlockKey("g"))
	if raw != `{"total_slots":3,"holders":["n1","n3"]}` {
		t.Fatalf("semaphore = %s", raw)
	}
	if meta, _ := rawGet(t, cli, "offpeak/groups/g/holders/n2"); meta != "" {
		t.Fatalf("metadata of the unlocked holder left behind: %s", meta)
	}
	for id, rev := range metaRevs {
		if _, r := rawGet(t, cli, "offpeak/groups/g/holders/"+id); r != rev {
			t.Fatalf("metadata of %s rewritten by the unlock (revision %d → %d)", id, rev, r)
		}
	}
	st, err := l.Status(ctx, "g")
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Holders) != 2 || st.Holds("n2") {
		t.Fatalf("holders after unlock = %+v", st.Holders)
	}
	for _, h := range st.Holders {
		if h.Hostname != h.ID+".example" {
			t.Fatalf("other holders' metadata changed: %+v", st.Holders)
		}
	}
	if res, err := l.Acquire(ctx, plugins.AcquireRequest{Group: "g", Slots: 3, Holder: plugins.Holder{ID: "n4"}}); err != nil || !res.Granted {
		t.Fatalf("freed slot not grantable: %+v, %v", res, err)
	}
	// Exactly one slot was freed: the next node is refused.
	if res, err := l.Acquire(ctx, plugins.AcquireRequest{Group: "g", Slots: 3, Holder: plugins.Holder{ID: "n5"}}); err != nil || res.Granted {
		t.Fatalf("Acquire(n5) after one unlock = %+v, %v; want refused", res, err)
	}
	// Unlocking the same node again frees nothing more.
	if err := l.Release(ctx, plugins.ReleaseRequest{Group: "g", ID: "n2", Reason: "unlock by admin"}); !errors.Is(err, plugins.ErrNotHolder) {
		t.Fatalf("second unlock = %v, want ErrNotHolder", err)
	}
	if raw, _ := rawGet(t, cli, semaphore.AirlockKey("g")); raw != `{"total_slots":3,"holders":["n1","n3","n4"]}` {
		t.Fatalf("semaphore = %s", raw)
	}
}

func TestStaleReclaimRecordsEvent(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	cli := rawClient(t, srv.Endpoints)
	l := newTestLocker(t, srv, nil)
	ctx := lockertest.Ctx(t)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	dead := plugins.Holder{ID: "dead", Hostname: "gone", AcquiredAt: t0, Deadline: t0.Add(time.Hour)}
	if _, err := l.Acquire(ctx, plugins.AcquireRequest{Group: "g", Slots: 1, Holder: dead, Now: t0}); err != nil {
		t.Fatal(err)
	}
	now := t0.Add(90 * time.Minute)
	res, err := l.Acquire(ctx, plugins.AcquireRequest{Group: "g", Slots: 1, Holder: plugins.Holder{ID: "n1"}, ReclaimStale: true, Now: now})
	if err != nil || !res.Granted {
		t.Fatalf("Acquire = %+v, %v", res, err)
	}
	resp, err := cli.Get(ctx, "offpeak/groups/g/events/", clientv3.WithPrefix())
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("events = %v, %v; want one", resp, err)
	}
	var ev semaphore.Event
	if err := json.Unmarshal(resp.Kvs[0].Value, &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Kind != "reclaim" || ev.By != "n1" || ev.Holder.ID != "dead" || ev.Holder.Hostname != "gone" ||
		!strings.HasPrefix(ev.Reason, "stale: deadline 2026-01-01T01:00:00Z passed") {
		t.Fatalf("event = %+v", ev)
	}
	if meta, _ := rawGet(t, cli, "offpeak/groups/g/holders/dead"); meta != "" {
		t.Fatalf("reclaimed holder's metadata left: %s", meta)
	}
}

func TestTLS(t *testing.T) {
	ca := lockertest.NewCA(t, "etcd")
	serverPair := ca.Server(t, "server")
	clientPair := ca.Client(t, "node")
	other := lockertest.NewCA(t, "other")

	caOnly := etcdtest.Start(t, etcdtest.Options{TLS: &serverPair})
	mtls := etcdtest.Start(t, etcdtest.Options{TLS: &serverPair, ClientCA: ca.CertFile})

	cases := []struct {
		name   string
		srv    *etcdtest.Server
		cfg    map[string]any
		wantOK bool
	}{
		{"CA-only trust", caOnly, map[string]any{"ca_file": ca.CertFile}, true},
		{"CA-only trust with server_name", caOnly, map[string]any{"ca_file": ca.CertFile, "server_name": "localhost"}, true},
		{"wrong CA", caOnly, map[string]any{"ca_file": other.CertFile}, false},
		{"client certificate", mtls, map[string]any{"ca_file": ca.CertFile, "cert_file": clientPair.CertFile, "key_file": clientPair.KeyFile}, true},
		{"client certificate missing", mtls, map[string]any{"ca_file": ca.CertFile}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.cfg["request_timeout"] = "2s"
			l := newTestLocker(t, c.srv, c.cfg)
			res, err := l.Acquire(lockertest.Ctx(t), plugins.AcquireRequest{Group: "tls", Slots: 5, Holder: plugins.Holder{ID: strings.ReplaceAll(c.name, " ", "-")}})
			if c.wantOK && (err != nil || !res.Granted) {
				t.Fatalf("Acquire = %+v, %v", res, err)
			}
			if !c.wantOK && !errors.Is(err, plugins.ErrUnavailable) {
				t.Fatalf("Acquire = %v, want ErrUnavailable", err)
			}
		})
	}

	t.Run("https endpoint without TLS settings is a config error", func(t *testing.T) {
		_, err := configure(t, map[string]any{"endpoints": caOnly.Endpoints})
		if !errors.Is(err, plugins.ErrInvalidArgument) {
			t.Fatalf("Configure = %v, want ErrInvalidArgument", err)
		}
	})
}

func TestPasswordAuth(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	ctx := lockertest.Ctx(t)
	admin := rawClient(t, srv.Endpoints)
	const secret = "s3cr3t-pa55"
	for _, step := range []func() error{
		func() error { _, err := admin.RoleAdd(ctx, "root"); return err },
		func() error { _, err := admin.UserAdd(ctx, "root", secret); return err },
		func() error { _, err := admin.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := admin.AuthEnable(ctx); return err },
	} {
		if err := step(); err != nil {
			t.Fatalf("enable auth: %v", err)
		}
	}
	cases := []struct {
		name   string
		cfg    map[string]any
		wantOK bool
	}{
		{"right password", map[string]any{"username": "root", "password": secret}, true},
		{"wrong password", map[string]any{"username": "root", "password": "nope"}, false},
		{"no credentials", map[string]any{}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var logs bytes.Buffer
			l := newLocker(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
			c.cfg["endpoints"] = srv.Endpoints
			c.cfg["request_timeout"] = "2s"
			raw, _ := json.Marshal(c.cfg)
			err := l.Configure(ctx, raw)
			if err == nil {
				defer l.Close()
				_, err = l.Acquire(ctx, plugins.AcquireRequest{Group: "auth", Slots: 3, Holder: plugins.Holder{ID: "n1"}})
			}
			if c.wantOK != (err == nil) {
				t.Fatalf("Acquire = %v, want success %v", err, c.wantOK)
			}
			if strings.Contains(logs.String(), secret) || (err != nil && strings.Contains(err.Error(), secret)) {
				t.Fatal("password appears in logs or errors")
			}
		})
	}
	t.Run("username without password is a config error", func(t *testing.T) {
		if _, err := configure(t, map[string]any{"endpoints": srv.Endpoints, "username": "root"}); !errors.Is(err, plugins.ErrInvalidArgument) {
			t.Fatalf("Configure = %v", err)
		}
	})
}

func TestConfigRejectsUnknownKeys(t *testing.T) {
	_, err := configure(t, map[string]any{"endpoint": "http://127.0.0.1:1"})
	if !errors.Is(err, plugins.ErrInvalidArgument) {
		t.Fatalf("Configure = %v, want ErrInvalidArgument", err)
	}
}

func TestStoreGuards(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	l := newTestLocker(t, srv, nil)
	cli, prefix, _, err := l.client()
	if err != nil {
		t.Fatal(err)
	}
	storetest.Run(t, newStore(cli, prefix, "guards"))
}

// A bad name is reported as such without a request: the answer must not
// depend on whether the cluster is reachable.
func TestInvalidArgumentsNeedNoServer(t *testing.T) {
	l, err := configure(t, map[string]any{
		"endpoints":       []string{"http://127.0.0.1:" + strconv.Itoa(lockertest.FreePort(t))},
		"request_timeout": "2s", "dial_timeout": "300ms",
	})
	if err != nil {
		t.Fatal(err)
	}
	lockertest.InvalidArguments(t, l, "g")
}

func TestUnreachableIsUnavailable(t *testing.T) {
	l, err := configure(t, map[string]any{
		"endpoints":       []string{"http://127.0.0.1:" + strconv.Itoa(lockertest.FreePort(t))},
		"request_timeout": "300ms", "dial_timeout": "300ms",
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Status(lockertest.Ctx(t), "g"); !errors.Is(err, plugins.ErrUnavailable) {
		t.Fatalf("Status = %v, want ErrUnavailable", err)
	}
}
