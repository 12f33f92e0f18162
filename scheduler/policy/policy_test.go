package policy

import "testing"

func TestDurationRoundTrip(t *testing.T) {
	for _, s := range []string{"3h", "1h30m", "45s", "1d", "2d12h", "90m"} {
		d, err := ParseDuration(s)
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		back, err := ParseDuration(FormatDuration(d))
		if err != nil || back != d {
			t.Fatalf("%s -> %s -> %v", s, FormatDuration(d), back)
		}
	}
	for _, bad := range []string{"", "3 hours", "-1h", "1x", "d", "1.5d"} {
		if _, err := ParseDuration(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
