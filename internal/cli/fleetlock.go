package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/offpeak/offpeak/lockers/fleetlock"
	"github.com/offpeak/offpeak/scheduler"
)

type fleetlockServeFlags struct {
	listen, policyPath            string
	tlsCert, tlsKey, clientCA     string
	adminTokenFile                string
	ignoreWindows, allowPlaintext bool
}

// newFleetlockCmd is `offpeak fleetlock serve`: a FleetLock server backed
// by the policy's locker, so FleetLock clients (zincati, airlock users) and
// offpeak nodes share one set of slots.
func newFleetlockCmd(a *App) *cobra.Command {
	cmd := &cobra.Command{Use: "fleetlock", Short: "Serve the FleetLock protocol on top of the policy's locker"}
	var f fleetlockServeFlags
	serve := &cobra.Command{
		Use:   "serve",
		Short: "Serve POST /v1/pre-reboot and /v1/steady-state (plus offpeak's status extension)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.runFleetlockServe(cmd.Context(), f)
		},
	}
	fl := serve.Flags()
	fl.StringVar(&f.listen, "listen", "", "address to listen on, host:port (required)")
	fl.StringVar(&f.policyPath, "policy", "", "policy file: locker, slots and windows (default: the search order)")
	fl.StringVar(&f.tlsCert, "tls-cert", "", "server certificate (PEM)")
	fl.StringVar(&f.tlsKey, "tls-key", "", "server key (PEM)")
	fl.StringVar(&f.clientCA, "client-ca", "", "require client certificates signed by this CA (PEM)")
	fl.StringVar(&f.adminTokenFile, "admin-token-file", "", "enable set-max/freeze/thaw over HTTP for requests bearing this token")
	fl.BoolVar(&f.ignoreWindows, "ignore-windows", false, "grant pre-reboot at any time, not only inside the policy's windows")
	fl.BoolVar(&f.allowPlaintext, "allow-plaintext", false, "allow serving without TLS on a non-loopback address")
	_ = serve.MarkFlagRequired("listen")
	cmd.AddCommand(serve)
	return cmd
}

func (a *App) runFleetlockServe(ctx context.Context, f fleetlockServeFlags) error {
	if (f.tlsCert == "") != (f.tlsKey == "") {
		return &ExitError{Code: 2, Err: errors.New("--tls-cert and --tls-key go together")}
	}
	if f.clientCA != "" && f.tlsCert == "" {
		return &ExitError{Code: 2, Err: errors.New("--client-ca needs --tls-cert and --tls-key")}
	}
	if f.tlsCert == "" && !f.allowPlaintext && !loopback(f.listen) {
		return &ExitError{Code: 2, Err: fmt.Errorf("refusing to serve plain HTTP on %s; give --tls-cert/--tls-key or --allow-plaintext", f.listen)}
	}
	var tc *tls.Config
	if f.tlsCert != "" {
		var err error
		if tc, err = fleetlock.ServerTLSConfig(f.tlsCert, f.tlsKey, f.clientCA); err != nil {
			return err
		}
	}
	var token string
	if f.adminTokenFile != "" {
		b, err := os.ReadFile(f.adminTokenFile)
		if err != nil {
			return fmt.Errorf("admin token: %w", err)
		}
		if token = strings.TrimSpace(string(b)); token == "" {
			return fmt.Errorf("admin token file %s is empty", f.adminTokenFile)
		}
	}
	l, pol, closeFn, err := a.openLocker(ctx, f.policyPath)
	if err != nil {
		return err
	}
	defer closeFn()
	// Only the groups the policy names are served (airlock's rule): a
	// client's typo must not create a group that coordinates with nobody.
	groups := pol.Lock.ServedGroups(pol.Node.Group)
	cfg := fleetlock.ServerConfig{Locker: l, Logger: a.Logger, Group: fleetlock.Groups(groups), StaleAfter: pol.Lock.StaleAfter.D(),
		AdminToken: token, Now: a.Now}
	if !f.ignoreWindows && pol.Strategy == "window" {
		cal, err := scheduler.NewCalendar(pol.Windows, pol.Blackouts)
		if err != nil {
			return err
		}
		cfg.Allowed = func(t time.Time) bool { _, ok := cal.Allowed(t); return ok }
	}
	srv, err := fleetlock.NewServer(cfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return err
	}
	a.Logger.Info("fleetlock server groups", "groups", groups, "stale_after", pol.Lock.StaleAfter.D())
	return serveFleetlock(ctx, a.Logger, ln, srv, tc)
}

// serveFleetlock serves until ctx ends, then shuts down gracefully.
func serveFleetlock(ctx context.Context, log *slog.Logger, ln net.Listener, h http.Handler, tc *tls.Config) error {
	hs := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		// Requests end with ctx, so long polls do not hold up shutdown.
		BaseContext: func(net.Listener) context.Context { return ctx },
		TLSConfig:   tc,
		ErrorLog:    slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	if tc != nil {
		ln = tls.NewListener(ln, tc)
	}
	log.Info("fleetlock server listening", "addr", ln.Addr().String(), "tls", tc != nil,
		"client_auth", tc != nil && tc.ClientAuth == tls.RequireAndVerifyClientCert)
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		return err
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
