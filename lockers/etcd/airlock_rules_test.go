package etcd

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sort"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/offpeak/offpeak/lockers/etcd/etcdtest"
	"github.com/offpeak/offpeak/lockers/lockertest"
	"github.com/offpeak/offpeak/plugins"
)

// airlockRules is a FleetLock server that follows airlock's semaphore rules
// to the letter, on a real etcd: the semaphore is created with the
// configured slot count only when its key is absent (version 0); a
// pre-reboot of an id already listed is granted without a write; any other
// id is refused while the holders number total_slots or more, else added
// (sorted) by a put compared on the version read; steady-state removes the
// id if present and writes back. Fields of the value it does not know are
// dropped, as a Go struct decode and encode drops them.
type airlockRules struct {
	cli    *clientv3.Client
	groups map[string]uint64
}

type airlockValue struct {
	TotalSlots uint64   `json:"total_slots"`
	Holders    []string `json:"holders"`
}

func (a *airlockRules) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	fail := func(code int, kind, value string) {
		b, _ := json.Marshal(map[string]string{"kind": kind, "value": value})
		http.Error(w, string(b), code)
	}
	var body struct {
		ClientParams struct{ ID, Group string } `json:"client_params"`
	}
	if r.Header.Get("fleet-lock-protocol") != "true" || json.NewDecoder(r.Body).Decode(&body) != nil ||
		body.ClientParams.ID == "" || body.ClientParams.Group == "" {
		fail(400, "invalid_client_identity", "failed to validate client identity")
		return
	}
	slots, ok := a.groups[body.ClientParams.Group]
	if !ok {
		fail(400, "unknown_group", fmt.Sprintf("unknown group %q", body.ClientParams.Group))
		return
	}
	ctx := r.Context()
	key := fmt.Sprintf("com.coreos.airlock/groups/%s/v1/semaphore", url.QueryEscape(body.ClientParams.Group))
	initial, _ := json.Marshal(airlockValue{TotalSlots: slots, Holders: []string{}})
	if _, err := a.cli.Txn(ctx).If(clientv3.Compare(clientv3.Version(key), "=", 0)).Then(clientv3.OpPut(key, string(initial))).Commit(); err != nil {
		fail(500, "failed_sem_init", err.Error())
		return
	}
	resp, err := a.cli.Get(ctx, key)
	if err != nil || len(resp.Kvs) != 1 {
		fail(500, "failed_lock", fmt.Sprintf("get: %v", err))
		return
	}
	var sem airlockValue
	if err := json.Unmarshal(resp.Kvs[0].Value, &sem); err != nil {
		fail(500, "failed_lock", err.Error())
		return
	}
	id := body.ClientParams.ID
	i := sort.SearchStrings(sem.Holders, id)
	held := i < len(sem.Holders) && sem.Holders[i] == id
	switch r.URL.Path {
	case "/v1/pre-reboot":
		if held {
			w.WriteHeader(http.StatusOK)
			return
		}
		if len(sem.Holders) >= int(sem.TotalSlots) {
			fail(500, "failed_lock", fmt.Sprintf("all %d semaphore slots currently locked", sem.TotalSlots))
			return
		}
		sem.Holders = slices.Insert(sem.Holders, i, id)
	case "/v1/steady-state":
		if held {
			sem.Holders = slices.Delete(sem.Holders, i, i+1)
		}
	default:
		http.NotFound(w, r)
		return
	}
	out, _ := json.Marshal(sem)
	tr, err := a.cli.Txn(ctx).If(clientv3.Compare(clientv3.Version(key), "=", resp.Kvs[0].Version)).Then(clientv3.OpPut(key, string(out))).Commit()
	if err != nil || !tr.Succeeded {
		fail(500, "failed_lock", "conflict on semaphore detected, aborting")
		return
	}
	w.WriteHeader(http.StatusOK)
}

// asAirlockClient asks the airlock-rules server as a Fedora CoreOS node's
// Zincati would and reports whether the slot was granted.
func asAirlockClient(t *testing.T, base, path, group, id string) (bool, string) {
	t.Helper()
	body := fmt.Sprintf(`{"client_params":{"group":%q,"id":%q}}`, group, id)
	req, _ := http.NewRequest(http.MethodPost, base+path, strings.NewReader(body))
	req.Header.Set("fleet-lock-protocol", "true")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e struct{ Kind, Value string }
	_ = json.NewDecoder(resp.Body).Decode(&e)
	return resp.StatusCode == http.StatusOK, e.Kind + ": " + e.Value
}

// An offpeak freeze stops airlock too: the freeze sets total_slots to 0 in
// the semaphore airlock reads, existing holders keep their slots, and the
// thaw gives the group its slot count back (#14).
func TestFreezeStopsAirlock(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.Options{})
	cli := rawClient(t, srv.Endpoints)
	l := newTestLocker(t, srv, nil)
	ctx := lockertest.Ctx(t)
	airlock := httptest.NewServer(&airlockRules{cli: cli, groups: map[string]uint64{"web": 3, "fresh": 2}})
	defer airlock.Close()

	const g = "web"
	if ok, why := asAirlockClient(t, airlock.URL, "/v1/pre-reboot", g, "fcos-1"); !ok {
		t.Fatalf("airlock refused before any freeze: %s", why)
	}
	if res, err := l.Acquire(ctx, plugins.AcquireRequest{Group: g, Slots: 3, Holder: plugins.Holder{ID: "offpeak-1"}}); err != nil || !res.Granted {
		t.Fatalf("Acquire = %+v, %v", res, err)
	}
	if err := l.Freeze(ctx, plugins.FreezeRequest{Group: g, Reason: "bad update", By: "offpeak-1", Slots: 3}); err != nil {
		t.Fatalf("Freeze: %v", err)
	}
	if ok, why := asAirlockClient(t, airlock.URL, "/v1/pre-reboot", g, "fcos-2"); ok {
		t.Fatal("airlock granted a new node during an offpeak freeze")
	} else if !strings.Contains(why, "failed_lock") {
		t.Fatalf("airlock's refusal = %s", why)
	}
	if ok, why := asAirlockClient(t, airlock.URL, "/v1/pre-reboot", g, "fcos-1"); !ok {
		t.Fatalf("airlock refused its existing holder during the freeze: %s", why)
	}
	st, err := l.Status(ctx, g)
	if err != nil || !st.Frozen || st.Slots != 3 || !st.Holds("fcos-1") || !st.Holds("offpeak-1") {
		t.Fatalf("Status during the freeze = %+v, %v; want frozen, 3 slots, both holders", st, err)
	}
	// set-max while frozen changes the count the thaw restores, not the
	// live value airlock reads.
	if st, err := l.SetSlots(ctx, g, 4); err != nil || st.Slots != 4 || !st.Frozen {
		t.Fatalf("SetSlots while frozen = %+v, %v", st, err)
	}
	if ok, _ := asAirlockClient(t, airlock.URL, "/v1/pre-reboot", g, "fcos-2"); ok {
		t.Fatal("airlock granted a new node after set-max during the freeze")
	}
	// airlock's steady-state rewrites the value: the freeze survives it.
	if ok, why := asAirlockClient(t, airlock.URL, "/v1/steady-state", g, "fcos-1"); !ok {
		t.Fatalf("steady-state: %s", why)
	}
	if ok, _ := asAirlockClient(t, airlock.URL, "/v1/pre-reboot", g, "fcos-2"); ok {
		t.Fatal("airlock granted a new node after a steady-state during the freeze")
	}
	if err := l.Thaw(ctx, g); err != nil {
		t.Fatalf("Thaw: %v", err)
	}
	raw, _ := rawGet(t, cli, "com.coreos.airlock/groups/web/v1/semaphore")
	if s := decodeAirlock(t, raw); s.TotalSlots != 4 {
		t.Fatalf("value after thaw = %s; want the 4 slots set while frozen", raw)
	}
	if ok, why := asAirlockClient(t, airlock.URL, "/v1/pre-reboot", g, "fcos-2"); !ok {
		t.Fatalf("airlock refused after the thaw: %s", why)
	}

	t.Run("freeze before the group exists", func(t *testing.T) {
		if err := l.Freeze(ctx, plugins.FreezeRequest{Group: "fresh", Reason: "hold", By: "operator", Slots: 2}); err != nil {
			t.Fatalf("Freeze: %v", err)
		}
		if ok, _ := asAirlockClient(t, airlock.URL, "/v1/pre-reboot", "fresh", "fcos-9"); ok {
			t.Fatal("airlock created and granted a group offpeak froze")
		}
		if err := l.Thaw(ctx, "fresh"); err != nil {
			t.Fatalf("Thaw: %v", err)
		}
		for _, id := range []string{"fcos-9", "fcos-10"} {
			if ok, why := asAirlockClient(t, airlock.URL, "/v1/pre-reboot", "fresh", id); !ok {
				t.Fatalf("airlock refused %s after the thaw: %s", id, why)
			}
		}
		if ok, _ := asAirlockClient(t, airlock.URL, "/v1/pre-reboot", "fresh", "fcos-11"); ok {
			t.Fatal("a third node was granted; the thaw should give the freeze's 2 slots")
		}
	})
}
