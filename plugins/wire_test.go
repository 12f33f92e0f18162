package plugins

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/offpeak/offpeak/plugins/pluginpb"
)

func TestErrorsCrossTheWire(t *testing.T) {
	all := []error{ErrNotHolder, ErrFrozen, ErrConflict, ErrUnavailable, ErrInvalidArgument, ErrNodeIDCollision}
	for _, s := range all {
		t.Run(s.Error(), func(t *testing.T) {
			sent := fmt.Errorf("etcd: group web: %w", s)
			got := fromStatus(toStatus(sent))
			for _, other := range all {
				if errors.Is(got, other) != (other == s) {
					t.Errorf("errors.Is(%v, %v) = %t", got, other, !(other == s))
				}
			}
			if got.Error() != sent.Error() {
				t.Errorf("message %q, want %q", got, sent)
			}
			if errors.Is(got, ErrTransport) || errors.Is(got, ErrBadAnswer) {
				t.Errorf("%v classified as a host failure", got)
			}
		})
	}
	for _, tc := range []struct {
		name string
		err  error
		is   error
		text string
	}{
		{"plain error", toStatus(errors.New("disk full")), nil, "disk full"},
		{"deadline", toStatus(fmt.Errorf("backend: %w", context.DeadlineExceeded)), context.DeadlineExceeded, "backend"},
		{"unavailable without detail", status.Error(codes.Unavailable, "connection refused"), ErrTransport, "connection refused"},
		{"not a status", errors.New("eof"), ErrTransport, "eof"},
		{"unimplemented", status.Error(codes.Unimplemented, "unknown service"), ErrBadAnswer, "not implemented"},
		{"unknown detail kind", func() error {
			st, _ := status.New(codes.Aborted, "x").WithDetails(&pluginpb.ErrorDetail{Kind: 99})
			return st.Err()
		}(), ErrBadAnswer, "unknown error kind 99"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := fromStatus(tc.err)
			if tc.is != nil && !errors.Is(got, tc.is) {
				t.Errorf("%v is not %v", got, tc.is)
			}
			for _, s := range all {
				if errors.Is(got, s) {
					t.Errorf("%v claims sentinel %v", got, s)
				}
			}
			if !strings.Contains(got.Error(), tc.text) {
				t.Errorf("message %q lacks %q", got, tc.text)
			}
		})
	}
	if toStatus(nil) != nil || fromStatus(nil) != nil {
		t.Fatal("nil error must stay nil")
	}
}

func TestStateConversion(t *testing.T) {
	at := time.Date(2026, 3, 29, 1, 30, 0, 123, time.UTC)
	in := LockState{
		Group: "web", Slots: 2, Revision: 9, Frozen: true, FrozenReason: "r", FrozenBy: "n2", FrozenAt: at,
		Opaque: true, Answer: "all 2 slots taken", PollInterval: 90 * time.Second,
		Holders: []Holder{{ID: "n1", Hostname: "h", BootID: "b", Version: "v", AcquiredAt: at, Meta: map[string]string{"k": "v"}}},
	}
	out, err := stateFromPB(stateToPB(in), "web")
	if err != nil {
		t.Fatal(err)
	}
	if !out.FrozenAt.Equal(at) || !out.Holders[0].AcquiredAt.Equal(at) || !out.Holders[0].Deadline.IsZero() ||
		out.Holders[0].Meta["k"] != "v" || out.Slots != 2 || out.Revision != 9 || out.FrozenBy != "n2" ||
		!out.Opaque || out.Answer != "all 2 slots taken" || out.PollInterval != 90*time.Second {
		t.Fatalf("round trip: %+v", out)
	}
	for _, tc := range []struct {
		name string
		mod  func(p *pluginpb.LockState)
		want string
	}{
		{"negative slots", func(p *pluginpb.LockState) { p.Slots = -1 }, "negative count"},
		{"huge slots", func(p *pluginpb.LockState) { p.Slots = 1 << 40 }, "out of range"},
		{"other group", func(p *pluginpb.LockState) { p.Group = "db" }, `state is for group "db"`},
		{"holder without id", func(p *pluginpb.LockState) { p.Holders[0].Id = "" }, "holder without an id"},
		{"nil holder", func(p *pluginpb.LockState) { p.Holders[0] = nil }, "missing holder"},
		{"bad timestamp", func(p *pluginpb.LockState) { p.FrozenAt = &timestamppb.Timestamp{Nanos: -5} }, "frozen_at"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := stateToPB(in)
			tc.mod(p)
			if _, err := stateFromPB(p, "web"); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

func TestServeOptsValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts ServeOpts
		want string
	}{
		{"no name", ServeOpts{HealthCheck: nopCheck{}}, "Name is empty"},
		{"nothing served", ServeOpts{Name: "x"}, "neither Locker nor HealthCheck"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := Serve(tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
	set, err := servePluginSet(ServeOpts{Name: "x", HealthCheck: nopCheck{}})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := set[string(KindLocker)]; ok || set[kindInfo] == nil || set[string(KindCheck)] == nil {
		t.Fatalf("plugin set %v", set)
	}
}

type nopCheck struct{}

func (nopCheck) Check(context.Context, CheckRequest) (CheckResult, error) { return CheckResult{}, nil }

func TestNewLoggerWritesHostFormat(t *testing.T) {
	var buf bytes.Buffer
	NewLogger(&buf, slog.LevelDebug-4).Log(context.Background(), slog.LevelWarn, "slot taken", "group", "web")
	line := buf.String()
	for _, want := range []string{`"@level":"warn"`, `"@message":"slot taken"`, `"group":"web"`, `"@timestamp":"`} {
		if !strings.Contains(line, want) {
			t.Errorf("%s lacks %s", line, want)
		}
	}
	for lv, want := range map[slog.Level]hclog.Level{slog.LevelDebug - 4: hclog.Trace, slog.LevelDebug: hclog.Debug, slog.LevelInfo: hclog.Info, slog.LevelWarn + 1: hclog.Warn, slog.LevelError + 4: hclog.Error} {
		if got := hclog.LevelFromString(levelName(lv)); got != want {
			t.Errorf("level %s -> %s, want %s", lv, got, want)
		}
	}
}
