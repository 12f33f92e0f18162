package strategies

import "testing"

func TestLookup(t *testing.T) {
	tests := []struct {
		name                         string
		reboots, window, lock, maybe bool
	}{
		{"off", false, false, false, false},
		{"reboot", true, false, false, false},
		{"etcd-lock", true, false, true, false},
		{"best-effort", true, false, true, true},
		{"window", true, true, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := Lookup(tt.name)
			if err != nil {
				t.Fatal(err)
			}
			if g.Reboots != tt.reboots || g.Window != tt.window || g.Lock != tt.lock || g.LockOptional != tt.maybe {
				t.Fatalf("%+v", g)
			}
		})
	}
	if _, err := Lookup("sometimes"); err == nil {
		t.Fatal("unknown strategy accepted")
	}
}
