package policyload

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

// [notify] timeout bounds each webhook attempt, and the webhook is told of
// a reboot before its last window check: an hour would let it eat the
// window, so anything above a minute is refused.
func TestNotifyTimeoutBounded(t *testing.T) {
	for _, tt := range []struct {
		timeout string
		msg     string
	}{
		{"1h", "at most 1m"},
		{"61s", "at most 1m"},
		{"0s", "must be positive"},
	} {
		t.Run(tt.timeout, func(t *testing.T) {
			src := "[notify]\nwebhook = \"https://hooks.example/offpeak\"\ntimeout = \"" + tt.timeout + "\"\n"
			_, err := Parse("/etc/offpeak/policy.toml", []byte(src), Options{Now: refNow})
			var errs Errors
			if !errors.As(err, &errs) || len(errs) == 0 {
				t.Fatalf("timeout %s accepted (err %v)", tt.timeout, err)
			}
			if e := errs[0]; e.File != "/etc/offpeak/policy.toml" || e.Line != 3 || e.Key != "notify.timeout" || !strings.Contains(e.Msg, tt.msg) {
				t.Fatalf("got %q", e.Error())
			}
		})
	}
	if _, err := Parse("p.toml", []byte("[notify]\nwebhook = \"https://hooks.example/offpeak\"\ntimeout = \"1m\"\n"), Options{Now: refNow}); err != nil {
		t.Fatalf("1m refused: %v", err)
	}
}
