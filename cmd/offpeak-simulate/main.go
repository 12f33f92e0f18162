// Command offpeak-simulate runs a fleet of real offpeak agents against a real
// locker on virtual time (`offpeak simulate` runs it). It is a separate
// binary because it links an embedded etcd server.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/offpeak/offpeak/internal/simulate/simcmd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := simcmd.Main(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
