package tlsutil

import (
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/offpeak/offpeak/plugins"
)

func TestClient(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.pem")
	if err := os.WriteFile(junk, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		o    Options
		ok   bool
	}{
		{"defaults", Options{}, true},
		{"missing CA", Options{CAFile: filepath.Join(dir, "absent")}, false},
		{"CA without PEM", Options{CAFile: junk}, false},
		{"cert without key", Options{CertFile: junk}, false},
		{"unreadable pair", Options{CertFile: junk, KeyFile: junk}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Client(tt.o)
			if tt.ok != (err == nil) || (err != nil && !errors.Is(err, plugins.ErrInvalidArgument)) {
				t.Fatalf("err = %v", err)
			}
			if tt.ok && (cfg.RootCAs != nil || cfg.InsecureSkipVerify) {
				t.Fatalf("defaults changed trust: %+v", cfg)
			}
		})
	}
}

// TestOptional: no setting means a plain connection (nil), and an error
// names the service.
func TestOptional(t *testing.T) {
	if cfg, err := Optional("etcd", Options{}); cfg != nil || err != nil {
		t.Fatalf("empty options: %v %v", cfg, err)
	}
	if cfg, err := Optional("etcd", Options{ServerName: "etcd.example"}); err != nil || cfg.ServerName != "etcd.example" || cfg.MinVersion != tls.VersionTLS12 {
		t.Fatalf("server name only: %+v %v", cfg, err)
	}
	_, err := Optional("fleetlock", Options{CAFile: filepath.Join(t.TempDir(), "absent")})
	if !errors.Is(err, plugins.ErrInvalidArgument) || !strings.HasPrefix(err.Error(), "fleetlock: ") {
		t.Fatalf("missing CA: %v", err)
	}
}
