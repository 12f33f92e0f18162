package etcd

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"

	"github.com/offpeak/offpeak/plugins"
)

// clientTLS builds the client TLS settings, or nil when none are configured.
// A CA file alone gives CA-only trust: the system roots are not consulted.
func clientTLS(cfg Config) (*tls.Config, error) {
	if cfg.CAFile == "" && cfg.CertFile == "" && cfg.KeyFile == "" && cfg.ServerName == "" && !cfg.InsecureSkipVerify {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: cfg.ServerName, InsecureSkipVerify: cfg.InsecureSkipVerify}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("%w: etcd ca_file: %w", plugins.ErrInvalidArgument, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: etcd ca_file %s holds no PEM certificate", plugins.ErrInvalidArgument, cfg.CAFile)
		}
		tc.RootCAs = pool
	}
	if (cfg.CertFile == "") != (cfg.KeyFile == "") {
		return nil, fmt.Errorf("%w: etcd cert_file and key_file must be set together", plugins.ErrInvalidArgument)
	}
	if cfg.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("%w: etcd client certificate: %w", plugins.ErrInvalidArgument, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}
