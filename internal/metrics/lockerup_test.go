package metrics

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/offpeak/offpeak/plugins"
)

// releaseLocker answers Release with a scripted error.
type releaseLocker struct {
	stubLocker
	err error
}

func (l *releaseLocker) Release(context.Context, plugins.ReleaseRequest) error { return l.err }

// offpeak_locker_up is absent before any locker call, 0 after a call that
// got no answer and 1 after any answer of the lock service, a refusal
// included.
func TestLockerUp(t *testing.T) {
	m := New(nil)
	if _, ok := gather(t, m)["offpeak_locker_up"]; ok {
		t.Fatal("offpeak_locker_up present before any locker call")
	}
	rl := &releaseLocker{}
	l := m.WrapLocker(rl)
	for _, tt := range []struct {
		err  error
		want float64
	}{
		{fmt.Errorf("etcd: read: %w: context deadline exceeded", plugins.ErrUnavailable), 0},
		{nil, 1},
		{fmt.Errorf("plugin: %w", plugins.ErrTransport), 0},
		{plugins.ErrNotHolder, 1},
		{errors.New("connection refused"), 0},
		{plugins.ErrFrozen, 1},
	} {
		rl.err = tt.err
		_ = l.Release(context.Background(), plugins.ReleaseRequest{})
		if got := gather(t, m)["offpeak_locker_up"]; got != tt.want {
			t.Fatalf("after %v: offpeak_locker_up %v, want %v", tt.err, got, tt.want)
		}
	}
}
