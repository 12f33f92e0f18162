package paths

import "testing"

func TestJoin(t *testing.T) {
	tests := []struct {
		root, path, want string
	}{
		{"", "/etc/offpeak/ca.pem", "/etc/offpeak/ca.pem"},
		{"/", "/etc/offpeak/ca.pem", "/etc/offpeak/ca.pem"},
		{"/srv/node", "/etc/offpeak/ca.pem", "/srv/node/etc/offpeak/ca.pem"},
		// An unset optional path (e.g. [notify] ca_file) stays unset; below
		// a root it must not become the root directory itself.
		{"/srv/node", "", ""},
		{"", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.root+"|"+tt.path, func(t *testing.T) {
			if got := (Layout{Root: tt.root}).Join(tt.path); got != tt.want {
				t.Fatalf("Join(%q) below %q = %q, want %q", tt.path, tt.root, got, tt.want)
			}
		})
	}
}
