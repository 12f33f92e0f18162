// Package tlsutil builds client TLS settings from the file names operators
// put in the policy, the same way for every locker, check and webhook: the
// one place offpeak sets up the client side of TLS.
package tlsutil

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"

	"github.com/offpeak/offpeak/plugins"
)

// Options selects the client side of TLS.
type Options struct {
	// CAFile, when set, is the only trust anchor (PEM, one or more
	// certificates); the system roots are not consulted.
	CAFile string
	// CertFile and KeyFile give a client certificate; both or neither.
	CertFile, KeyFile  string
	ServerName         string
	InsecureSkipVerify bool
}

// Empty reports whether no TLS setting was given.
func (o Options) Empty() bool { return o == Options{} }

// Client turns o into a tls.Config. Errors wrap plugins.ErrInvalidArgument:
// each one is a setting that points at something unusable.
func Client(o Options) (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: o.ServerName, InsecureSkipVerify: o.InsecureSkipVerify} //nolint:gosec // opt-in setting
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("%w: ca_file: %w", plugins.ErrInvalidArgument, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: ca_file %s holds no PEM certificate", plugins.ErrInvalidArgument, o.CAFile)
		}
		cfg.RootCAs = pool
	}
	if (o.CertFile == "") != (o.KeyFile == "") {
		return nil, fmt.Errorf("%w: the client certificate and key must be given together", plugins.ErrInvalidArgument)
	}
	if o.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("%w: client certificate: %w", plugins.ErrInvalidArgument, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// Optional is Client for a service reached over plain connections unless
// TLS is configured: nil when o is empty, and errors prefixed with the
// service's name.
func Optional(service string, o Options) (*tls.Config, error) {
	if o.Empty() {
		return nil, nil
	}
	tc, err := Client(o)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", service, err)
	}
	return tc, nil
}
