package consul

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// fakeConsul serves the part of Consul's HTTP API the locker uses — KV get,
// recursive list with blocking queries, put, delete and /v1/txn with the
// set, cas, delete, check-index and check-not-exists verbs — with Consul's
// index rules: every write advances one Raft-like index, a key carries the
// index of its creation and last change, and a list's X-Consul-Index is the
// highest index under the prefix, deletions included (the table's index when
// the prefix never held anything). It lets the locker's tests run where no
// consul binary is installed; tests against a real agent run as well when
// one is.
type fakeConsul struct {
	mu      sync.Mutex
	index   uint64
	kv      map[string]*api.KVPair
	deleted map[string]uint64 // tombstones: key → index of its deletion
	changed chan struct{}     // closed and replaced on every write
	done    chan struct{}     // closed at cleanup, ends blocking queries
}

func startFake(t *testing.T) string {
	t.Helper()
	f := &fakeConsul{index: 1, kv: map[string]*api.KVPair{}, deleted: map[string]uint64{},
		changed: make(chan struct{}), done: make(chan struct{})}
	hs := httptest.NewServer(f)
	t.Cleanup(hs.Close)
	t.Cleanup(func() { close(f.done) }) // runs first: hs.Close waits for handlers
	return strings.TrimPrefix(hs.URL, "http://")
}

func (f *fakeConsul) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Consul-KnownLeader", "true")
	w.Header().Set("X-Consul-LastContact", "0")
	switch key, isKV := strings.CutPrefix(r.URL.Path, "/v1/kv/"); {
	case r.URL.Path == "/v1/txn" && r.Method == http.MethodPut:
		f.txn(w, r)
	case isKV && r.Method == http.MethodGet:
		f.get(w, r, key)
	case isKV && r.Method == http.MethodPut:
		v, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		f.mu.Lock()
		f.apply([]api.KVTxnOp{{Verb: api.KVSet, Key: key, Value: v}})
		f.mu.Unlock()
		fmt.Fprintln(w, "true")
	case isKV && r.Method == http.MethodDelete:
		f.mu.Lock()
		f.apply([]api.KVTxnOp{{Verb: api.KVDelete, Key: key}})
		f.mu.Unlock()
		fmt.Fprintln(w, "true")
	default:
		http.Error(w, "fake consul: unsupported "+r.Method+" "+r.URL.Path, http.StatusNotFound)
	}
}

// get answers a single-key read or, with ?recurse, a prefix list; with
// ?index=N it blocks until the answer's index exceeds N or ?wait passes.
func (f *fakeConsul) get(w http.ResponseWriter, r *http.Request, key string) {
	q := r.URL.Query()
	_, recurse := q["recurse"]
	var waitIndex uint64
	if s := q.Get("index"); s != "" {
		var err error
		if waitIndex, err = strconv.ParseUint(s, 10, 64); err != nil {
			http.Error(w, "bad index", http.StatusBadRequest)
			return
		}
	}
	wait := 5 * time.Minute
	if s := q.Get("wait"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			http.Error(w, "bad wait", http.StatusBadRequest)
			return
		}
		wait = d
	}
	timeout := time.NewTimer(wait)
	defer timeout.Stop()
	for {
		f.mu.Lock()
		pairs, idx := f.read(key, recurse)
		changed := f.changed
		f.mu.Unlock()
		if waitIndex == 0 || idx > waitIndex {
			w.Header().Set("X-Consul-Index", strconv.FormatUint(idx, 10))
			if len(pairs) == 0 {
				w.WriteHeader(http.StatusNotFound)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(pairs)
			return
		}
		select {
		case <-changed:
		case <-timeout.C:
			waitIndex = 0 // answer with the unchanged index
		case <-r.Context().Done():
			return
		case <-f.done:
			return
		}
	}
}

// read returns copies of the matching pairs and the index a blocking query
// on them compares.
func (f *fakeConsul) read(key string, recurse bool) ([]*api.KVPair, uint64) {
	var pairs []*api.KVPair
	var idx uint64
	for k, p := range f.kv {
		if k == key || (recurse && strings.HasPrefix(k, key)) {
			c := *p
			pairs = append(pairs, &c)
			idx = max(idx, p.ModifyIndex)
		}
	}
	for k, i := range f.deleted {
		if k == key || (recurse && strings.HasPrefix(k, key)) {
			idx = max(idx, i)
		}
	}
	if idx == 0 {
		idx = f.index
	}
	slices.SortFunc(pairs, func(a, b *api.KVPair) int { return strings.Compare(a.Key, b.Key) })
	return pairs, idx
}

// txn checks every op, then applies all of them at one new index, or none.
func (f *fakeConsul) txn(w http.ResponseWriter, r *http.Request) {
	var in api.TxnOps
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ops := make([]api.KVTxnOp, len(in))
	for i, op := range in {
		if op.KV == nil {
			http.Error(w, "fake consul: only KV operations", http.StatusBadRequest)
			return
		}
		ops[i] = *op.KV
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var errs api.TxnErrors
	for i, op := range ops {
		cur := f.kv[op.Key]
		var what string
		switch op.Verb {
		case api.KVSet, api.KVDelete:
		case api.KVCAS:
			if (op.Index == 0 && cur != nil) || (op.Index != 0 && (cur == nil || cur.ModifyIndex != op.Index)) {
				what = "failed to set key " + op.Key + ", index is stale"
			}
		case api.KVCheckIndex:
			if cur == nil || cur.ModifyIndex != op.Index {
				what = "current modify index for key " + op.Key + " does not match"
			}
		case api.KVCheckNotExists:
			if cur != nil {
				what = "key " + op.Key + " exists"
			}
		default:
			http.Error(w, "fake consul: unsupported verb "+string(op.Verb), http.StatusBadRequest)
			return
		}
		if what != "" {
			errs = append(errs, &api.TxnError{OpIndex: i, What: what})
		}
	}
	w.Header().Set("Content-Type", "application/json")
	if len(errs) > 0 {
		w.WriteHeader(http.StatusConflict)
		_ = json.NewEncoder(w).Encode(api.TxnResponse{Errors: errs})
		return
	}
	_ = json.NewEncoder(w).Encode(api.TxnResponse{Results: f.apply(ops)})
}

// apply performs checked ops at the next index; f.mu is held.
func (f *fakeConsul) apply(ops []api.KVTxnOp) api.TxnResults {
	f.index++
	var res api.TxnResults
	for _, op := range ops {
		switch op.Verb {
		case api.KVSet, api.KVCAS:
			p := &api.KVPair{Key: op.Key, Value: op.Value, Flags: op.Flags, CreateIndex: f.index, ModifyIndex: f.index}
			if cur := f.kv[op.Key]; cur != nil {
				p.CreateIndex = cur.CreateIndex
			}
			f.kv[op.Key] = p
			delete(f.deleted, op.Key)
			res = append(res, &api.TxnResult{KV: &api.KVPair{Key: p.Key, CreateIndex: p.CreateIndex, ModifyIndex: p.ModifyIndex}})
		case api.KVDelete:
			if _, ok := f.kv[op.Key]; ok {
				delete(f.kv, op.Key)
				f.deleted[op.Key] = f.index
			}
		case api.KVCheckIndex, api.KVCheckNotExists:
			if cur := f.kv[op.Key]; cur != nil {
				c := *cur
				res = append(res, &api.TxnResult{KV: &c})
			}
		}
	}
	close(f.changed)
	f.changed = make(chan struct{})
	return res
}
