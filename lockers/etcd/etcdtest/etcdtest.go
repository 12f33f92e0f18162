// Package etcdtest runs a real single-member etcd server in-process for
// tests, on loopback ports and a temporary data directory.
package etcdtest

import (
	"context"
	"fmt"
	"net/url"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/offpeak/offpeak/lockers/etcd/etcdembed"
	"github.com/offpeak/offpeak/lockers/lockertest"
)

// Options adjusts the server.
type Options struct {
	// TLS serves clients over TLS with this certificate.
	TLS *lockertest.Pair
	// ClientCA, with TLS, requires client certificates signed by this CA.
	ClientCA string
}

// Server is a running (or stopped) embedded etcd.
type Server struct {
	t         testing.TB
	cfg       *embed.Config
	e         *embed.Etcd
	Endpoints []string
	Dir       string
}

// Start starts etcd and waits until it serves. It stops at test cleanup.
func Start(t testing.TB, opt Options) *Server {
	t.Helper()
	dir := t.TempDir()
	scheme := "http"
	if opt.TLS != nil {
		scheme = "https"
	}
	cu := url.URL{Scheme: scheme, Host: fmt.Sprintf("127.0.0.1:%d", lockertest.FreePort(t))}
	pu := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", lockertest.FreePort(t))}
	cfg := etcdembed.Config("offpeak-test", dir, cu, pu)
	// The lowest bcrypt cost keeps password-auth tests fast under -race.
	cfg.BcryptCost = 4
	if opt.TLS != nil {
		cfg.ClientTLSInfo = transport.TLSInfo{
			CertFile:       opt.TLS.CertFile,
			KeyFile:        opt.TLS.KeyFile,
			TrustedCAFile:  opt.ClientCA,
			ClientCertAuth: opt.ClientCA != "",
		}
	}
	s := &Server{t: t, cfg: cfg, Endpoints: []string{cu.String()}, Dir: dir}
	s.start()
	t.Cleanup(s.Stop)
	return s
}

func (s *Server) start() {
	s.t.Helper()
	e, err := etcdembed.Start(context.Background(), s.cfg, 30*time.Second)
	if err != nil {
		s.t.Fatalf("start etcd: %v", err)
	}
	s.e = e
}

// Stop shuts the server down (as a crash would, from the clients' side).
func (s *Server) Stop() {
	if s.e != nil {
		s.e.Close()
		s.e = nil
	}
}

// Restart starts a stopped server again on the same data dir and ports.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.cfg.ClusterState = embed.ClusterStateFlagExisting
	s.start()
}
