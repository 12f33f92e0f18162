// Command offpeak reboots image-based Linux hosts only inside maintenance
// windows, holding a cluster slot, after health checks pass.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/offpeak/offpeak/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
