package memlocker

import (
	"context"
	"testing"

	"github.com/offpeak/offpeak/lockers/lockertest"
	"github.com/offpeak/offpeak/lockers/semaphore/storetest"
	"github.com/offpeak/offpeak/plugins"
)

func TestConformance(t *testing.T) {
	l := New()
	lockertest.Run(t, func(t *testing.T) plugins.Locker { return l })
}

func TestStoreKeepsTheContract(t *testing.T) {
	storetest.Run(t, NewStore())
}

func TestConfigure(t *testing.T) {
	l := New()
	for _, ok := range []string{"", "{}", "null"} {
		if err := l.Configure(context.Background(), []byte(ok)); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	if err := l.Configure(context.Background(), []byte(`{"dir":"/x"}`)); err == nil {
		t.Error("a setting was accepted")
	}
}
