package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/offpeak/offpeak/lockers/lockertest"
	"github.com/offpeak/offpeak/plugins"
)

func TestLockerAgainstDemoService(t *testing.T) {
	srv := httptest.NewServer(newService())
	t.Cleanup(srv.Close)
	l := newLocker(slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	if err := l.Configure(ctx, []byte(`{"url":"`+srv.URL+`"}`)); err != nil {
		t.Fatal(err)
	}
	acq := func(id string) plugins.AcquireResult {
		t.Helper()
		res, err := l.Acquire(ctx, plugins.AcquireRequest{Group: "web", Slots: 1, Holder: plugins.Holder{ID: id}})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	if !acq("a").Granted {
		t.Fatal("first node not granted")
	}
	res := acq("b")
	if res.Granted {
		t.Fatal("second node granted beyond the slot count")
	}
	done := make(chan plugins.LockState, 1)
	go func() {
		st, err := l.Wait(ctx, "web", res.State.Revision)
		if err != nil {
			t.Error(err)
		}
		done <- st
	}()
	if err := l.Release(ctx, plugins.ReleaseRequest{Group: "web", ID: "a"}); err != nil {
		t.Fatal(err)
	}
	if st := <-done; st.Holds("a") {
		t.Fatalf("wait: %+v", st)
	}
	if err := l.Release(ctx, plugins.ReleaseRequest{Group: "web", ID: "a"}); !errors.Is(err, plugins.ErrNotHolder) {
		t.Fatalf("second release: %v", err)
	}
	if err := l.Freeze(ctx, plugins.FreezeRequest{Group: "web", Reason: "bad boot", By: "a"}); err != nil {
		t.Fatal(err)
	}
	if res, err := l.Acquire(ctx, plugins.AcquireRequest{Group: "web", Slots: 1, Holder: plugins.Holder{ID: "b"}}); err != nil || res.Granted || !res.State.Frozen || res.State.FrozenReason != "bad boot" {
		t.Fatalf("acquire while frozen: %+v, %v; want refused with the frozen state", res, err)
	}
	srv.Close()
	if _, err := l.Status(ctx, "web"); !errors.Is(err, plugins.ErrUnavailable) {
		t.Fatalf("service down: %v", err)
	}
}

// TestConformanceOverTheWire runs offpeak's locker conformance suite on the
// plugin as offpeak sees it: every call crosses the plugin protocol, then
// the HTTP API of the demo service.
func TestConformanceOverTheWire(t *testing.T) {
	srv := httptest.NewServer(newService())
	t.Cleanup(srv.Close)
	lockertest.Run(t, func(t *testing.T) plugins.Locker {
		w := plugins.RoundTrip(t, plugins.ServeOpts{Name: "counter-locker", Version: version, Locker: newLocker(slog.New(slog.DiscardHandler))})
		if err := w.Locker.Configure(lockertest.Ctx(t), []byte(`{"url":"`+srv.URL+`"}`)); err != nil {
			t.Fatal(err)
		}
		return w.Locker
	})
}
