package etcd

import (
	"crypto/tls"
	"fmt"

	"github.com/offpeak/offpeak/internal/tlsutil"
)

// clientTLS builds the client TLS settings, or nil when none are configured.
// A CA file alone gives CA-only trust: the system roots are not consulted.
func clientTLS(cfg Config) (*tls.Config, error) {
	o := tlsutil.Options{CAFile: cfg.CAFile, CertFile: cfg.CertFile, KeyFile: cfg.KeyFile, ServerName: cfg.ServerName, InsecureSkipVerify: cfg.InsecureSkipVerify}
	if o.Empty() {
		return nil, nil
	}
	tc, err := tlsutil.Client(o)
	if err != nil {
		return nil, fmt.Errorf("etcd: %w", err)
	}
	return tc, nil
}
