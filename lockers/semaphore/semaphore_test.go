package semaphore

import (
	"encoding/json"
	"errors"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/offpeak/offpeak/plugins"
)

func TestParseMarshalRoundTrip(t *testing.T) {
	cases := []struct{ in, out string }{
		{`{"total_slots":2,"holders":["b","a"]}`, `{"total_slots":2,"holders":["a","b"]}`},
		{`{"holders":null,"total_slots":1}`, `{"total_slots":1,"holders":[]}`},
		{`{"total_slots":1}`, `{"total_slots":1,"holders":[]}`},
		{`{"total_slots":0,"holders":[],"z":1,"a":{"k":[1]}}`, `{"total_slots":0,"holders":[],"a":{"k":[1]},"z":1}`},
	}
	for _, c := range cases {
		t.Run(c.in, func(t *testing.T) {
			v, err := Parse([]byte(c.in))
			if err != nil {
				t.Fatal(err)
			}
			b, err := v.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != c.out {
				t.Fatalf("Marshal = %s, want %s", b, c.out)
			}
		})
	}
}

func TestAirlockKeyEscapesGroup(t *testing.T) {
	cases := map[string]string{
		"default": "com.coreos.airlock/groups/default/v1/semaphore",
		"eu/web":  "com.coreos.airlock/groups/eu%2Fweb/v1/semaphore",
		"a&b":     "com.coreos.airlock/groups/a%26b/v1/semaphore",
	}
	for g, want := range cases {
		if got := AirlockKey(g); got != want {
			t.Errorf("AirlockKey(%q) = %s, want %s", g, got, want)
		}
	}
}

func TestDecide(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	sem := func(n uint64, hs ...string) *Value { v := New(n); v.Holders = hs; return v }
	meta := map[string]plugins.Holder{
		"old":   {ID: "old", Deadline: t0},
		"fresh": {ID: "fresh", Deadline: t0.Add(time.Hour)},
	}
	cases := []struct {
		name          string
		snap          Snapshot
		req           plugins.AcquireRequest
		granted       bool
		frozen        bool
		writesSem     bool
		reclaimed     []string
		wantInvalid   bool
		wantAcquireAt time.Time
	}{
		{name: "create", snap: Snapshot{}, req: plugins.AcquireRequest{Slots: 2}, granted: true, writesSem: true},
		{name: "create without slots", snap: Snapshot{}, req: plugins.AcquireRequest{}, wantInvalid: true},
		{name: "full", snap: Snapshot{Sem: sem(1, "x")}, req: plugins.AcquireRequest{}},
		{name: "holder refresh writes no semaphore", snap: Snapshot{Sem: sem(1, "me")}, granted: true},
		{name: "holder refresh while frozen", snap: Snapshot{Sem: sem(1, "me"), Frozen: &Frozen{}}, granted: true},
		{name: "frozen", snap: Snapshot{Sem: sem(3), Frozen: &Frozen{}}, frozen: true},
		{name: "frozen reclaims nothing", snap: Snapshot{Sem: sem(1, "old"), Meta: meta, Frozen: &Frozen{}},
			req: plugins.AcquireRequest{ReclaimStale: true, Now: t0}, frozen: true},
		{name: "deadline reached is stale", snap: Snapshot{Sem: sem(1, "old"), Meta: meta},
			req: plugins.AcquireRequest{ReclaimStale: true, Now: t0}, granted: true, writesSem: true, reclaimed: []string{"old"}},
		{name: "deadline ahead is not stale", snap: Snapshot{Sem: sem(1, "fresh"), Meta: meta},
			req: plugins.AcquireRequest{ReclaimStale: true, Now: t0}},
		{name: "reclaim without room still removes the stale holder", snap: Snapshot{Sem: sem(1, "fresh", "old", "x"), Meta: meta},
			req: plugins.AcquireRequest{ReclaimStale: true, Now: t0}, writesSem: true, reclaimed: []string{"old"}},
		{name: "no metadata never stale", snap: Snapshot{Sem: sem(1, "x"), Meta: meta},
			req: plugins.AcquireRequest{ReclaimStale: true, Now: t0.Add(1000 * time.Hour)}},
		{name: "new holder acquired now", snap: Snapshot{Sem: sem(2, "x")}, granted: true, writesSem: true, wantAcquireAt: t0},
		{name: "refresh keeps the first acquired-at", snap: Snapshot{Sem: sem(1, "me"), Meta: map[string]plugins.Holder{"me": {ID: "me", AcquiredAt: t0.Add(-time.Hour)}}},
			req: plugins.AcquireRequest{Now: t0}, granted: true, wantAcquireAt: t0.Add(-time.Hour)},
		{name: "refresh without metadata acquired now", snap: Snapshot{Sem: sem(1, "me")}, granted: true, wantAcquireAt: t0},
		{name: "acquired-at given by the request wins", snap: Snapshot{Sem: sem(1, "me"), Meta: map[string]plugins.Holder{"me": {ID: "me", AcquiredAt: t0.Add(-time.Hour)}}},
			req: plugins.AcquireRequest{Holder: plugins.Holder{AcquiredAt: t0.Add(time.Minute)}}, granted: true, wantAcquireAt: t0.Add(time.Minute)},
		{name: "stale metadata of a non-holder is not its acquired-at", snap: Snapshot{Sem: sem(2), Meta: map[string]plugins.Holder{"me": {ID: "me", AcquiredAt: t0.Add(-time.Hour)}}},
			granted: true, writesSem: true, wantAcquireAt: t0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req := c.req
			req.Group = "g"
			req.Holder.ID = "me"
			if req.Now.IsZero() {
				req.Now = t0
			}
			p, err := Decide(c.snap, req, req.Now)
			if c.wantInvalid {
				if !errors.Is(err, plugins.ErrInvalidArgument) {
					t.Fatalf("err = %v, want ErrInvalidArgument", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.Granted != c.granted || p.Frozen != c.frozen || (p.Sem != nil) != c.writesSem {
				t.Fatalf("plan = %+v", p)
			}
			var rec []string
			for _, h := range p.Reclaimed {
				rec = append(rec, h.ID)
			}
			if !slices.Equal(rec, c.reclaimed) {
				t.Fatalf("reclaimed %v, want %v", rec, c.reclaimed)
			}
			if p.Granted && p.Holder.AcquiredAt.IsZero() {
				t.Fatal("granted holder has no acquired-at")
			}
			if !c.wantAcquireAt.IsZero() && !p.Holder.AcquiredAt.Equal(c.wantAcquireAt) {
				t.Fatalf("acquired-at = %s, want %s", p.Holder.AcquiredAt, c.wantAcquireAt)
			}
			if p.Granted && (p.Holder.ID != "me" || (p.Sem != nil && !p.Sem.Has("me"))) {
				t.Fatalf("granted plan = %+v, want the requester added", p)
			}
			if !p.Granted && p.Sem != nil && p.Sem.Has("me") {
				t.Fatalf("refused plan adds the requester: %+v", p.Sem)
			}
			if c.snap.Sem != nil && p.Sem == c.snap.Sem {
				t.Fatal("plan aliases the snapshot's semaphore")
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		`{"total_slots":2,"holders":["a","b"]}`,
		`{"total_slots":1,"holders":[],"x":{"y":[1,2]}}`,
		`{"total_slots":-1}`, `null`, `[]`, `{"total_slots":1,"holders":["a","a"]}`,
		`{"total_slots":1e3,"holders":null}`, `{"total_slots":4}{}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := Parse(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			return
		}
		if !sort.StringsAreSorted(v.Holders) {
			t.Fatalf("holders not sorted: %v", v.Holders)
		}
		out, err := v.Marshal()
		if err != nil {
			t.Fatalf("Marshal of a parsed value: %v", err)
		}
		// What offpeak writes must parse again to the same thing and must
		// decode with airlock's field types.
		v2, err := Parse(out)
		if err != nil {
			t.Fatalf("re-parse of %s: %v", out, err)
		}
		if v2.TotalSlots != v.TotalSlots || !slices.Equal(v2.Holders, v.Holders) || len(v2.Extra) != len(v.Extra) {
			t.Fatalf("round trip changed %+v into %+v", v, v2)
		}
		var airlock struct {
			TotalSlots uint64   `json:"total_slots"`
			Holders    []string `json:"holders"`
		}
		if err := json.Unmarshal(out, &airlock); err != nil {
			t.Fatalf("airlock cannot decode %s: %v", out, err)
		}
	})
}

func TestAddRecord(t *testing.T) {
	var s Snapshot
	for _, c := range []struct{ rel, value string }{
		{"holders/a%2Fb", `{"id":"a/b","hostname":"h"}`},
		{"frozen", `{"reason":"r","by":"op"}`},
		{"events/00000000000000000001-a", `not even json`},
		{"holders/x/y", `nope`},
		{"holders/", `nope`},
		{"holders/%zz", `nope`},
		{"unrelated", `nope`},
	} {
		if err := s.AddRecord(c.rel, []byte(c.value), 1); err != nil {
			t.Fatalf("AddRecord(%s): %v", c.rel, err)
		}
	}
	if len(s.Meta) != 1 || s.Meta["a/b"].Hostname != "h" || s.Frozen == nil || s.Frozen.By != "op" {
		t.Fatalf("snapshot = %+v", s)
	}
	for _, c := range []struct{ rel, value string }{
		{"holders/a", `{"id":"b"}`},
		{"holders/a", `[`},
		{"frozen", `"yes"`},
	} {
		if err := s.AddRecord(c.rel, []byte(c.value), 1); !errors.Is(err, ErrMalformed) {
			t.Fatalf("AddRecord(%s, %s) = %v, want ErrMalformed", c.rel, c.value, err)
		}
	}
	if err := s.SetSem([]byte(`{"total_slots":1,"holders":["z"]}`), 7); err != nil || s.Version != 7 || !s.Sem.Has("z") {
		t.Fatalf("SetSem = %v, snapshot %+v", err, s)
	}
	if err := s.SetSem([]byte(`{}`), 8); !errors.Is(err, ErrMalformed) || s.Version != 7 {
		t.Fatalf("SetSem of a bad value = %v, version %d", err, s.Version)
	}
}

func TestEventKeySortsByTime(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	a, b := EventKey(t0, "z"), EventKey(t0.Add(time.Nanosecond), "a")
	if a >= b || !strings.HasPrefix(a, "events/") || !strings.HasSuffix(EventKey(t0, "a/b"), "-a%2Fb") {
		t.Fatalf("EventKey: %s, %s", a, b)
	}
}
