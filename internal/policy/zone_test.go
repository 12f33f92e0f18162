package policy

import (
	"errors"
	"strings"
	"testing"
)

// "Local" is the zone of whichever host reads the policy, so one policy
// would mean different instants on different hosts: it is refused wherever
// a zone is named, with FILE:LINE: key and a hint that an IANA name is due.
func TestLocalTimezoneRefused(t *testing.T) {
	tests := []struct {
		name, src string
		line      int
		key       string
	}{
		{"window", "[[window]]\nstart = \"0 2 * * *\"\nduration = \"1h\"\ntimezone = \"Local\"\n", 4, "window[0].timezone"},
		{"blackout", "[[blackout]]\nfrom = 2026-12-20T00:00:00\nuntil = 2027-01-04T00:00:00\ntimezone = \"Local\"\n", 4, "blackout[0].timezone"},
		{"blackout with offsets", "[[blackout]]\nfrom = 2026-12-20T00:00:00Z\nuntil = 2027-01-04T00:00:00Z\ntimezone = \"Local\"\n", 4, "blackout[0].timezone"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("/etc/offpeak/policy.toml", []byte(tt.src), Options{Now: refNow})
			var errs Errors
			if !errors.As(err, &errs) || len(errs) == 0 {
				t.Fatalf("timezone \"Local\" accepted (err %v)", err)
			}
			e := errs[0]
			if e.File != "/etc/offpeak/policy.toml" || e.Line != tt.line || e.Key != tt.key || !strings.Contains(e.Msg, "IANA") || !strings.Contains(e.Msg, `"Local"`) {
				t.Fatalf("got %q, want line %d key %s naming \"Local\" and an IANA zone", e.Error(), tt.line, tt.key)
			}
		})
	}
}
