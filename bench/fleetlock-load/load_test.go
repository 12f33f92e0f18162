package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/offpeak/offpeak/lockers/file"
	"github.com/offpeak/offpeak/lockers/fleetlock"
)

func TestOverlap(t *testing.T) {
	at := func(s int) time.Time { return time.Unix(int64(s), 0) }
	sp := func(a, b int) span { return span{at(a), at(b)} }
	for _, tc := range []struct {
		name             string
		spans            []span
		slots            int
		most, violations int
	}{
		{"none", nil, 1, 0, 0},
		{"back to back do not overlap", []span{sp(0, 1), sp(1, 2), sp(2, 3)}, 1, 1, 0},
		{"two at once within two slots", []span{sp(0, 2), sp(1, 3)}, 2, 2, 0},
		{"third begins while two hold", []span{sp(0, 5), sp(1, 5), sp(2, 3)}, 2, 3, 1},
		{"every later one over one slot", []span{sp(0, 9), sp(1, 9), sp(2, 9), sp(3, 9)}, 1, 4, 3},
		{"empty span ignored", []span{sp(0, 2), sp(1, 1)}, 1, 1, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			most, v := overlap(tc.spans, tc.slots)
			if most != tc.most || v != tc.violations {
				t.Errorf("overlap = %d, %d violations; want %d, %d", most, v, tc.most, tc.violations)
			}
		})
	}
}

func TestFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no url", nil, "--url is required"},
		{"not http", []string{"--url", "ftp://x"}, "want http(s)"},
		{"no clients", []string{"--url", "http://x:1", "--clients", "0"}, "--clients 0"},
		{"no end", []string{"--url", "http://x:1", "--duration", "0"}, "--duration or --grants"},
		{"bad output", []string{"--url", "http://x:1", "--output", "yaml"}, "want text or json"},
		{"stray argument", []string{"--url", "http://x:1", "extra"}, "unexpected arguments"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseFlags(tc.args, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("parseFlags(%q) = %v, want an error containing %q", tc.args, err, tc.want)
			}
		})
	}
}

func runJSON(t *testing.T, args ...string) *Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute) // hang guard
	defer cancel()
	var out bytes.Buffer
	if err := run(ctx, append(args, "--output", "json"), &out, io.Discard); err != nil {
		t.Fatalf("run: %v", err)
	}
	var r Report
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("report: %v\n%s", err, out.String())
	}
	return &r
}

// Against offpeak's own server on the file locker: every grant is released,
// nothing is refused with a 5xx, and the clients never see more holders
// than slots.
func TestLoadAgainstOffpeakServer(t *testing.T) {
	l := file.New(nil)
	cfg, _ := json.Marshal(map[string]string{"dir": t.TempDir()})
	if err := l.Configure(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	h, err := fleetlock.NewServer(fleetlock.ServerConfig{Locker: l, Group: fleetlock.Groups(map[string]int{"bench": 2})})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()

	jsonFile := t.TempDir() + "/report.json"
	r := runJSON(t, "--url", srv.URL, "--group", "bench", "--clients", "6", "--slots", "2",
		"--grants", "40", "--hold", "0", "--retry", "1ms", "--json", jsonFile)

	if r.Grants != 40 {
		t.Errorf("grants in the measured period = %d, want 40 (the run stops at the 40th)", r.Grants)
	}
	if got := r.Answers["pre-reboot 200"]; got != r.GrantsAll {
		t.Errorf("pre-reboot 200 answers = %d, grants = %d", got, r.GrantsAll)
	}
	if got := r.Answers["steady-state 200"]; got != r.GrantsAll || r.ReleasesLost != 0 {
		t.Errorf("steady-state 200 answers = %d (%d given up), want one per grant (%d)", got, r.ReleasesLost, r.GrantsAll)
	}
	if r.HTTP5xx != 0 || r.TransportErrors != 0 {
		t.Errorf("5xx = %d, transport errors = %d; answers %v", r.HTTP5xx, r.TransportErrors, r.Answers)
	}
	if r.Invariant.SurelyMax > 2 || r.Invariant.Violations != 0 {
		t.Errorf("clients saw %d holders at once (%d violations) with 2 slots", r.Invariant.SurelyMax, r.Invariant.Violations)
	}
	if r.GrantWait.Count != r.GrantsAll || r.Latency["all"].Count != r.Requests {
		t.Errorf("grant waits %d for %d grants; request latencies %d for %d requests",
			r.GrantWait.Count, r.GrantsAll, r.Latency["all"].Count, r.Requests)
	}
	st, err := l.Status(t.Context(), "bench")
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Holders) != 0 {
		t.Errorf("holders left on the server: %v", st.Holders)
	}
	var fromFile Report
	raw, err := os.ReadFile(jsonFile)
	if err != nil || json.Unmarshal(raw, &fromFile) != nil || fromFile.GrantsAll != r.GrantsAll {
		t.Errorf("--json file does not hold the report (%v): %s", err, raw)
	}
}

// A server that grants every request breaks the slot rule: the check must
// say so. Each client holds until the run stops at the 4th grant, so all
// four grants are held at once whatever the timing.
func TestLoadCatchesOverGrantingServer(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	r := runJSON(t, "--url", srv.URL, "--clients", "4", "--slots", "1", "--grants", "4", "--hold", "1h")
	if r.Invariant.SurelyMax != 4 || r.Invariant.Violations != 3 {
		t.Errorf("surely %d holders at once, %d violations; want 4 and 3", r.Invariant.SurelyMax, r.Invariant.Violations)
	}
}

// airlock refuses a full group with 500 failed_lock; that is counted as a
// 5xx but told apart from 5xx answers that are failures.
func TestLoadClassifiesAirlockFullAnswer(t *testing.T) {
	var mu sync.Mutex
	asked := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			ClientParams struct{ ID string } `json:"client_params"`
		}
		_ = json.NewDecoder(r.Body).Decode(&req)
		if !strings.HasSuffix(r.URL.Path, "/pre-reboot") {
			return
		}
		mu.Lock()
		asked[req.ClientParams.ID]++
		n := asked[req.ClientParams.ID]
		mu.Unlock()
		switch n {
		case 1:
			http.Error(w, `{"kind":"failed_lock","value":"all 1 semaphore slots currently locked"}`, http.StatusInternalServerError)
		case 2:
			http.Error(w, `{"kind":"failed_lock","value":"etcdserver: request timed out"}`, http.StatusInternalServerError)
		}
	}))
	defer srv.Close()
	r := runJSON(t, "--url", srv.URL, "--clients", "3", "--slots", "3", "--grants", "3", "--hold", "1h", "--retry", "0")
	if r.HTTP5xx != 6 || r.HTTP5xxNotFull != 3 {
		t.Errorf("5xx = %d (%d not full), want 6 (3); answers %v", r.HTTP5xx, r.HTTP5xxNotFull, r.Answers)
	}
	if got := r.Answers["pre-reboot 500 failed_lock (slots full)"]; got != 3 {
		t.Errorf("answers %v: want 3 × pre-reboot 500 failed_lock (slots full)", r.Answers)
	}
}

func TestUnion(t *testing.T) {
	at := func(s int) time.Time { return time.Unix(int64(s), 0) }
	sp := func(a, b int) span { return span{at(a), at(b)} }
	got := union([]span{sp(5, 9), sp(0, 2), sp(1, 3), sp(3, 4), sp(6, 7)})
	want := []span{sp(0, 4), sp(5, 9)}
	if len(got) != len(want) {
		t.Fatalf("union = %v, want %v", got, want)
	}
	for i := range want {
		if !got[i].from.Equal(want[i].from) || !got[i].to.Equal(want[i].to) {
			t.Errorf("union[%d] = %v, want %v", i, got[i], want[i])
		}
	}
}

// A client that gives up on a release asks again with the same id: the
// server hands it the same slot, so it must not count as two holders.
func TestLoadGivenUpReleaseCountsOnce(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/steady-state") {
			http.Error(w, `{"kind":"failed_lock","value":"etcdserver: request timed out"}`, http.StatusInternalServerError)
		}
	}))
	defer srv.Close()
	r := runJSON(t, "--url", srv.URL, "--clients", "1", "--slots", "1", "--grants", "3", "--hold", "0", "--retry", "0")
	if r.ReleasesLost != r.GrantsAll || r.GrantsAll < 3 {
		t.Errorf("%d releases given up for %d grants, want one per grant (at least 3)", r.ReleasesLost, r.GrantsAll)
	}
	if r.Invariant.SurelyMax != 1 || r.Invariant.AtMostMax != 1 || r.Invariant.Violations != 0 {
		t.Errorf("holders at once: surely %d, at most %d, %d violations; want 1, 1, 0",
			r.Invariant.SurelyMax, r.Invariant.AtMostMax, r.Invariant.Violations)
	}
}
