// Command fleetlock-load puts a FleetLock server under contention: N clients,
// each asking for a slot in one group until granted, holding it for a while,
// reporting steady-state, and starting over. It measures grants per second,
// request latency, how long a client waits for a grant, every answer by
// status code and error kind, and checks from the clients' side that no more
// than --slots of them held a slot at once.
//
// It speaks only the base protocol (airlock's), so it measures offpeak's
// server and airlock alike. It is a benchmark, not part of offpeak.
//
//	go run ./bench/fleetlock-load --url http://127.0.0.1:8080 --clients 50 --slots 10 --duration 30s
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "fleetlock-load:", err)
		os.Exit(1)
	}
}
