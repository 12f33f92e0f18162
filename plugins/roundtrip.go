package plugins

import (
	"testing"

	"github.com/hashicorp/go-plugin"
)

// Wire is a plugin served in this process and the host's view of it.
// Every call goes over the plugin protocol as it would to a plugin process:
// gRPC on a local socket, answers validated by the host's client, errors
// carried as status codes and turned back into the sentinels.
type Wire struct {
	// Locker and HealthCheck are what the host dispenses; nil for what the
	// plugin does not serve.
	Locker      Locker
	HealthCheck HealthCheck
	// Info answers what the plugin says about itself.
	Info Describer
}

// RoundTrip serves opts in this process, as Serve would in a plugin's
// main, and connects a host to it; both ends close when t ends. It is for a
// plugin's own tests: run lockers/lockertest's suite over Wire.Locker, or
// call Wire.HealthCheck, and see what offpeak would see.
func RoundTrip(t testing.TB, opts ServeOpts) Wire {
	t.Helper()
	set, err := servePluginSet(opts)
	if err != nil {
		t.Fatalf("plugins.RoundTrip: %v", err)
	}
	// Closing the client shuts the server down through the plugin
	// protocol's controller, as the host does with a plugin process.
	client, _ := plugin.TestPluginGRPCConn(t, false, set)
	t.Cleanup(func() { client.Close() })
	dispense := func(name string) any {
		t.Helper()
		v, err := client.Dispense(name)
		if err != nil {
			t.Fatalf("plugins.RoundTrip: dispensing %s: %v", name, err)
		}
		return v
	}
	w := Wire{Info: dispense(kindInfo).(Describer)}
	if opts.Locker != nil {
		w.Locker = dispense(string(KindLocker)).(Locker)
	}
	if opts.HealthCheck != nil {
		w.HealthCheck = dispense(string(KindCheck)).(HealthCheck)
	}
	return w
}
