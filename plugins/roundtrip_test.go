package plugins_test

import (
	"context"
	"errors"
	"testing"

	"github.com/offpeak/offpeak/lockers/lockertest"
	"github.com/offpeak/offpeak/lockers/memlocker"
	"github.com/offpeak/offpeak/plugins"
)

// TestRoundTripLockerConformance: the in-memory locker keeps every rule
// of the conformance suite when each call crosses the plugin protocol.
func TestRoundTripLockerConformance(t *testing.T) {
	w := plugins.RoundTrip(t, plugins.ServeOpts{Name: "mem", Version: "0.0.1", Locker: memlocker.New()})
	if w.HealthCheck != nil {
		t.Fatal("a check dispensed for a plugin that serves none")
	}
	info, err := w.Info.Describe(context.Background())
	if err != nil || info.Name != "mem" || info.Version != "0.0.1" || !info.Serves(plugins.KindLocker) || info.Serves(plugins.KindCheck) {
		t.Fatalf("Describe = %+v, %v", info, err)
	}
	lockertest.Run(t, func(*testing.T) plugins.Locker { return w.Locker })
}

type failingCheck struct{}

func (failingCheck) Check(context.Context, plugins.CheckRequest) (plugins.CheckResult, error) {
	return plugins.CheckResult{Outcome: "maybe"}, nil
}

// TestRoundTripValidatesAnswers: the host's side refuses an answer offpeak
// would refuse, as it does from a plugin process.
func TestRoundTripValidatesAnswers(t *testing.T) {
	w := plugins.RoundTrip(t, plugins.ServeOpts{Name: "bad", HealthCheck: failingCheck{}})
	_, err := w.HealthCheck.Check(context.Background(), plugins.CheckRequest{Name: "x", Phase: plugins.PhasePreReboot})
	if !errors.Is(err, plugins.ErrBadAnswer) {
		t.Fatalf("Check = %v, want ErrBadAnswer", err)
	}
}
