package plugins

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/offpeak/offpeak/plugins/pluginpb"
)

// Errors the host side of the protocol returns.
var (
	// ErrBadAnswer: the plugin answered something the protocol does not
	// allow (an unknown outcome, negative slots, a state for another group).
	ErrBadAnswer = errors.New("plugin gave an invalid answer")
	// ErrTransport: the connection to the plugin process failed; the
	// process is probably dead.
	ErrTransport = errors.New("plugin connection failed")
)

// sentinels maps each shared sentinel error to its wire form. The gRPC code
// is for non-Go readers; the ErrorKind detail is what the host decodes.
var sentinels = []struct {
	err  error
	kind pluginpb.ErrorKind
	code codes.Code
}{
	{ErrNotHolder, pluginpb.ErrorKind_ERROR_KIND_NOT_HOLDER, codes.NotFound},
	{ErrFrozen, pluginpb.ErrorKind_ERROR_KIND_FROZEN, codes.FailedPrecondition},
	{ErrConflict, pluginpb.ErrorKind_ERROR_KIND_CONFLICT, codes.Aborted},
	{ErrUnavailable, pluginpb.ErrorKind_ERROR_KIND_UNAVAILABLE, codes.Unavailable},
	{ErrInvalidArgument, pluginpb.ErrorKind_ERROR_KIND_INVALID_ARGUMENT, codes.InvalidArgument},
	{ErrNodeIDCollision, pluginpb.ErrorKind_ERROR_KIND_NODE_ID_COLLISION, codes.FailedPrecondition},
}

// toStatus turns an implementation's error into a gRPC status error that
// carries the sentinel, if any, and the full message.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	for _, s := range sentinels {
		if errors.Is(err, s.err) {
			st, derr := status.New(s.code, err.Error()).WithDetails(&pluginpb.ErrorDetail{Kind: s.kind})
			if derr != nil {
				return status.Error(s.code, err.Error())
			}
			return st.Err()
		}
	}
	var gs interface{ GRPCStatus() *status.Status }
	if errors.As(err, &gs) {
		return err
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	}
	return status.Error(codes.Unknown, err.Error())
}

// remoteError is an error returned by the plugin. Its text is the plugin's
// message; it unwraps to the shared sentinel the plugin returned, if any.
type remoteError struct {
	msg      string
	sentinel error
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.sentinel }

// fromStatus decodes an error from a gRPC call.
func fromStatus(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Errorf("%w: %w", ErrTransport, err)
	}
	for _, d := range st.Details() {
		det, ok := d.(*pluginpb.ErrorDetail)
		if !ok {
			continue
		}
		for _, s := range sentinels {
			if s.kind == det.GetKind() {
				return &remoteError{msg: st.Message(), sentinel: s.err}
			}
		}
		return fmt.Errorf("%w: unknown error kind %d in error %q", ErrBadAnswer, det.GetKind(), st.Message())
	}
	switch st.Code() {
	case codes.Unavailable:
		// A plugin's own "unavailable" carries a detail (above); without
		// one this is the connection to the plugin process.
		return fmt.Errorf("%w: %s", ErrTransport, st.Message())
	case codes.DeadlineExceeded:
		return fmt.Errorf("%w: %s", context.DeadlineExceeded, st.Message())
	case codes.Canceled:
		return fmt.Errorf("%w: %s", context.Canceled, st.Message())
	case codes.Unimplemented:
		return fmt.Errorf("%w: not implemented by the plugin: %s", ErrBadAnswer, st.Message())
	}
	return &remoteError{msg: st.Message()}
}

func badAnswer(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBadAnswer, fmt.Sprintf(format, args...))
}

func tsToPB(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func tsFromPB(ts *timestamppb.Timestamp) (time.Time, error) {
	if ts == nil {
		return time.Time{}, nil
	}
	if err := ts.CheckValid(); err != nil {
		return time.Time{}, err
	}
	return ts.AsTime(), nil
}

func intFromPB(n int64) (int, error) {
	if n < 0 {
		return 0, fmt.Errorf("negative count %d", n)
	}
	if n > math.MaxInt32 {
		return 0, fmt.Errorf("count %d out of range", n)
	}
	return int(n), nil
}

func holderToPB(h Holder) *pluginpb.Holder {
	return &pluginpb.Holder{
		Id:         h.ID,
		Hostname:   h.Hostname,
		BootId:     h.BootID,
		Version:    h.Version,
		AcquiredAt: tsToPB(h.AcquiredAt),
		Deadline:   tsToPB(h.Deadline),
		Meta:       h.Meta,
	}
}

func holderFromPB(p *pluginpb.Holder) (Holder, error) {
	if p == nil {
		return Holder{}, errors.New("missing holder")
	}
	h := Holder{
		ID:       p.GetId(),
		Hostname: p.GetHostname(),
		BootID:   p.GetBootId(),
		Version:  p.GetVersion(),
		Meta:     p.GetMeta(),
	}
	var err error
	if h.AcquiredAt, err = tsFromPB(p.GetAcquiredAt()); err != nil {
		return Holder{}, fmt.Errorf("holder %q: acquired_at: %w", h.ID, err)
	}
	if h.Deadline, err = tsFromPB(p.GetDeadline()); err != nil {
		return Holder{}, fmt.Errorf("holder %q: deadline: %w", h.ID, err)
	}
	return h, nil
}

func holdersToPB(hs []Holder) []*pluginpb.Holder {
	out := make([]*pluginpb.Holder, 0, len(hs))
	for _, h := range hs {
		out = append(out, holderToPB(h))
	}
	return out
}

// holdersFromPB decodes a holder list, rejecting holders without an id and
// duplicates.
func holdersFromPB(ps []*pluginpb.Holder) ([]Holder, error) {
	out := make([]Holder, 0, len(ps))
	seen := make(map[string]bool, len(ps))
	for _, p := range ps {
		h, err := holderFromPB(p)
		if err != nil {
			return nil, err
		}
		if h.ID == "" {
			return nil, errors.New("holder without an id")
		}
		if seen[h.ID] {
			return nil, fmt.Errorf("holder %q listed twice", h.ID)
		}
		seen[h.ID] = true
		out = append(out, h)
	}
	return out, nil
}

func stateToPB(s LockState) *pluginpb.LockState {
	return &pluginpb.LockState{
		Group:        s.Group,
		Slots:        int64(s.Slots),
		Holders:      holdersToPB(s.Holders),
		Frozen:       s.Frozen,
		FrozenReason: s.FrozenReason,
		FrozenBy:     s.FrozenBy,
		FrozenAt:     tsToPB(s.FrozenAt),
		Revision:     s.Revision,
		Opaque:       s.Opaque,
		Answer:       s.Answer,
		PollInterval: durToPB(s.PollInterval),
	}
}

func durToPB(d time.Duration) *durationpb.Duration {
	if d == 0 {
		return nil
	}
	return durationpb.New(d)
}

// stateFromPB decodes and validates a group's state; group is the group the
// caller asked about.
func stateFromPB(p *pluginpb.LockState, group string) (LockState, error) {
	if p == nil {
		return LockState{}, errors.New("missing lock state")
	}
	if p.GetGroup() != group {
		return LockState{}, fmt.Errorf("state is for group %q, asked for %q", p.GetGroup(), group)
	}
	slots, err := intFromPB(p.GetSlots())
	if err != nil {
		return LockState{}, fmt.Errorf("slots: %w", err)
	}
	holders, err := holdersFromPB(p.GetHolders())
	if err != nil {
		return LockState{}, err
	}
	frozenAt, err := tsFromPB(p.GetFrozenAt())
	if err != nil {
		return LockState{}, fmt.Errorf("frozen_at: %w", err)
	}
	var poll time.Duration
	if d := p.GetPollInterval(); d != nil {
		if err := d.CheckValid(); err != nil || d.AsDuration() < 0 {
			return LockState{}, fmt.Errorf("poll_interval: invalid %v", d)
		}
		poll = d.AsDuration()
	}
	return LockState{
		Group:        p.GetGroup(),
		Slots:        slots,
		Holders:      holders,
		Frozen:       p.GetFrozen(),
		FrozenReason: p.GetFrozenReason(),
		FrozenBy:     p.GetFrozenBy(),
		FrozenAt:     frozenAt,
		Revision:     p.GetRevision(),
		Opaque:       p.GetOpaque(),
		Answer:       p.GetAnswer(),
		PollInterval: poll,
	}, nil
}

var phases = map[Phase]pluginpb.Phase{
	PhasePreReboot: pluginpb.Phase_PHASE_PRE_REBOOT,
	PhasePostBoot:  pluginpb.Phase_PHASE_POST_BOOT,
}

var outcomes = map[Outcome]pluginpb.Outcome{
	Pass:  pluginpb.Outcome_OUTCOME_PASS,
	Fail:  pluginpb.Outcome_OUTCOME_FAIL,
	Error: pluginpb.Outcome_OUTCOME_ERROR,
}

func phaseFromPB(p pluginpb.Phase) (Phase, bool) {
	for k, v := range phases {
		if v == p {
			return k, true
		}
	}
	return "", false
}

func outcomeFromPB(o pluginpb.Outcome) (Outcome, bool) {
	for k, v := range outcomes {
		if v == o {
			return k, true
		}
	}
	return "", false
}
