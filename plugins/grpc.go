package plugins

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"unicode/utf8"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/offpeak/offpeak/plugins/pluginpb"
)

// The go-plugin glue: each type registers the server half in the plugin
// process and builds the validating client half in the host.

type lockerPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	impl Locker
}

func (p *lockerPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	pluginpb.RegisterLockerServer(s, &lockerServer{impl: p.impl})
	return nil
}

func (p *lockerPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return &lockerClient{c: pluginpb.NewLockerClient(c)}, nil
}

type checkPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	impl HealthCheck
}

func (p *checkPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	pluginpb.RegisterHealthCheckServer(s, &checkServer{impl: p.impl})
	return nil
}

func (p *checkPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return &checkClient{c: pluginpb.NewHealthCheckClient(c)}, nil
}

type infoPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	info Info
}

func (p *infoPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	pluginpb.RegisterInfoServer(s, &infoServer{info: p.info})
	return nil
}

func (p *infoPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return &infoClient{c: pluginpb.NewInfoClient(c)}, nil
}

// ---- plugin side ----

type infoServer struct {
	pluginpb.UnimplementedInfoServer
	info Info
}

func (s *infoServer) Describe(context.Context, *pluginpb.DescribeRequest) (*pluginpb.DescribeResponse, error) {
	kinds := make([]string, 0, len(s.info.Kinds))
	for _, k := range s.info.Kinds {
		kinds = append(kinds, string(k))
	}
	return &pluginpb.DescribeResponse{
		Name:            s.info.Name,
		Version:         s.info.Version,
		Kinds:           kinds,
		ProtocolVersion: int32(s.info.ProtocolVersion),
	}, nil
}

type lockerServer struct {
	pluginpb.UnimplementedLockerServer
	impl Locker
}

// badRequest refuses a request the plugin side cannot decode or that is
// out of range. It is ErrInvalidArgument to the host, as the same request
// made in-process would be.
func badRequest(format string, args ...any) error {
	return toStatus(fmt.Errorf("%w: bad request from host: %s", ErrInvalidArgument, fmt.Sprintf(format, args...)))
}

func (s *lockerServer) Configure(ctx context.Context, req *pluginpb.ConfigureRequest) (*pluginpb.Empty, error) {
	if err := s.impl.Configure(ctx, json.RawMessage(req.GetConfigJson())); err != nil {
		return nil, toStatus(err)
	}
	return &pluginpb.Empty{}, nil
}

func (s *lockerServer) Acquire(ctx context.Context, req *pluginpb.AcquireRequest) (*pluginpb.AcquireResponse, error) {
	holder, err := holderFromPB(req.GetHolder())
	if err != nil {
		return nil, badRequest("%v", err)
	}
	now, err := tsFromPB(req.GetNow())
	if err != nil {
		return nil, badRequest("now: %v", err)
	}
	if req.GetSlots() < 0 || req.GetSlots() > math.MaxInt32 {
		return nil, badRequest("slots %d out of range", req.GetSlots())
	}
	res, err := s.impl.Acquire(ctx, AcquireRequest{
		Group:          req.GetGroup(),
		Holder:         holder,
		Slots:          int(req.GetSlots()),
		ReclaimStale:   req.GetReclaimStale(),
		Now:            now,
		PreviousBootID: req.GetPreviousBootId(),
	})
	if err != nil {
		return nil, toStatus(err)
	}
	return &pluginpb.AcquireResponse{
		Granted:   res.Granted,
		State:     stateToPB(res.State),
		Reclaimed: holdersToPB(res.Reclaimed),
	}, nil
}

func (s *lockerServer) Release(ctx context.Context, req *pluginpb.ReleaseRequest) (*pluginpb.Empty, error) {
	err := s.impl.Release(ctx, ReleaseRequest{Group: req.GetGroup(), ID: req.GetId(), Reason: req.GetReason()})
	if err != nil {
		return nil, toStatus(err)
	}
	return &pluginpb.Empty{}, nil
}

func (s *lockerServer) Status(ctx context.Context, req *pluginpb.GroupRequest) (*pluginpb.LockState, error) {
	st, err := s.impl.Status(ctx, req.GetGroup())
	if err != nil {
		return nil, toStatus(err)
	}
	return stateToPB(st), nil
}

func (s *lockerServer) Wait(ctx context.Context, req *pluginpb.WaitRequest) (*pluginpb.LockState, error) {
	st, err := s.impl.Wait(ctx, req.GetGroup(), req.GetRevision())
	if err != nil {
		return nil, toStatus(err)
	}
	return stateToPB(st), nil
}

func (s *lockerServer) SetSlots(ctx context.Context, req *pluginpb.SetSlotsRequest) (*pluginpb.LockState, error) {
	if req.GetSlots() < 0 || req.GetSlots() > math.MaxInt32 {
		return nil, badRequest("slots %d out of range", req.GetSlots())
	}
	st, err := s.impl.SetSlots(ctx, req.GetGroup(), int(req.GetSlots()))
	if err != nil {
		return nil, toStatus(err)
	}
	return stateToPB(st), nil
}

func (s *lockerServer) Freeze(ctx context.Context, req *pluginpb.FreezeRequest) (*pluginpb.Empty, error) {
	at, err := tsFromPB(req.GetAt())
	if err != nil {
		return nil, badRequest("at: %v", err)
	}
	if req.GetSlots() < 0 || req.GetSlots() > math.MaxInt32 {
		return nil, badRequest("slots %d out of range", req.GetSlots())
	}
	err = s.impl.Freeze(ctx, FreezeRequest{Group: req.GetGroup(), Reason: req.GetReason(), By: req.GetBy(), At: at, Slots: int(req.GetSlots())})
	if err != nil {
		return nil, toStatus(err)
	}
	return &pluginpb.Empty{}, nil
}

func (s *lockerServer) Thaw(ctx context.Context, req *pluginpb.GroupRequest) (*pluginpb.Empty, error) {
	if err := s.impl.Thaw(ctx, req.GetGroup()); err != nil {
		return nil, toStatus(err)
	}
	return &pluginpb.Empty{}, nil
}

type checkServer struct {
	pluginpb.UnimplementedHealthCheckServer
	impl HealthCheck
}

func (s *checkServer) Check(ctx context.Context, req *pluginpb.CheckRequest) (*pluginpb.CheckResult, error) {
	phase, ok := phaseFromPB(req.GetPhase())
	if !ok {
		return nil, badRequest("unknown phase %v", req.GetPhase())
	}
	node := req.GetNode()
	res, err := s.impl.Check(ctx, CheckRequest{
		Name:  req.GetName(),
		Phase: phase,
		Node: Node{
			ID:       node.GetId(),
			Group:    node.GetGroup(),
			Hostname: node.GetHostname(),
			BootID:   node.GetBootId(),
		},
		Config: json.RawMessage(req.GetConfigJson()),
	})
	if err != nil {
		return nil, toStatus(err)
	}
	// An outcome outside the three travels as UNSPECIFIED, which the host
	// rejects: the plugin's bug surfaces there, not as a silent pass.
	return &pluginpb.CheckResult{
		Outcome: outcomes[res.Outcome],
		Reason:  res.Reason,
		Details: res.Details,
		Time:    tsToPB(res.Time),
	}, nil
}

// ---- host side ----

type infoClient struct{ c pluginpb.InfoClient }

func (c *infoClient) Describe(ctx context.Context) (Info, error) {
	resp, err := c.c.Describe(ctx, &pluginpb.DescribeRequest{})
	if err != nil {
		return Info{}, fromStatus(err)
	}
	info := Info{Name: resp.GetName(), Version: resp.GetVersion(), ProtocolVersion: int(resp.GetProtocolVersion())}
	if info.Name == "" {
		return Info{}, badAnswer("empty plugin name")
	}
	for _, k := range resp.GetKinds() {
		if !Kind(k).Valid() {
			return Info{}, badAnswer("unknown kind %q", k)
		}
		info.Kinds = append(info.Kinds, Kind(k))
	}
	if len(info.Kinds) == 0 {
		return Info{}, badAnswer("plugin serves nothing")
	}
	if info.ProtocolVersion != ProtocolVersion {
		return Info{}, badAnswer("plugin claims protocol version %d, negotiated %d", info.ProtocolVersion, ProtocolVersion)
	}
	return info, nil
}

type lockerClient struct{ c pluginpb.LockerClient }

func (l *lockerClient) Configure(ctx context.Context, config json.RawMessage) error {
	_, err := l.c.Configure(ctx, &pluginpb.ConfigureRequest{ConfigJson: config})
	return fromStatus(err)
}

func (l *lockerClient) Acquire(ctx context.Context, req AcquireRequest) (AcquireResult, error) {
	h := req.Holder
	if err := sendable("group", req.Group, "holder id", h.ID, "hostname", h.Hostname, "boot id", h.BootID,
		"version", h.Version, "previous boot id", req.PreviousBootID); err != nil {
		return AcquireResult{}, err
	}
	for k, v := range h.Meta {
		if err := sendable("metadata key", k, "metadata value", v); err != nil {
			return AcquireResult{}, err
		}
	}
	resp, err := l.c.Acquire(ctx, &pluginpb.AcquireRequest{
		Group:          req.Group,
		Holder:         holderToPB(req.Holder),
		Slots:          int64(req.Slots),
		ReclaimStale:   req.ReclaimStale,
		Now:            tsToPB(req.Now),
		PreviousBootId: req.PreviousBootID,
	})
	if err != nil {
		return AcquireResult{}, fromStatus(err)
	}
	st, err := stateFromPB(resp.GetState(), req.Group)
	if err != nil {
		return AcquireResult{}, badAnswer("%v", err)
	}
	reclaimed, err := holdersFromPB(resp.GetReclaimed())
	if err != nil {
		return AcquireResult{}, badAnswer("reclaimed: %v", err)
	}
	// A grant must show the node among the holders and a refusal must not;
	// anything else could let two nodes believe they hold the same slot.
	if resp.GetGranted() != st.Holds(req.Holder.ID) {
		return AcquireResult{}, badAnswer("granted=%t but holder %q listed=%t", resp.GetGranted(), req.Holder.ID, st.Holds(req.Holder.ID))
	}
	return AcquireResult{Granted: resp.GetGranted(), State: st, Reclaimed: reclaimed}, nil
}

func (l *lockerClient) Release(ctx context.Context, req ReleaseRequest) error {
	if err := sendable("group", req.Group, "holder id", req.ID, "reason", req.Reason); err != nil {
		return err
	}
	_, err := l.c.Release(ctx, &pluginpb.ReleaseRequest{Group: req.Group, Id: req.ID, Reason: req.Reason})
	return fromStatus(err)
}

func (l *lockerClient) Status(ctx context.Context, group string) (LockState, error) {
	if err := sendable("group", group); err != nil {
		return LockState{}, err
	}
	resp, err := l.c.Status(ctx, &pluginpb.GroupRequest{Group: group})
	if err != nil {
		return LockState{}, fromStatus(err)
	}
	st, err := stateFromPB(resp, group)
	if err != nil {
		return LockState{}, badAnswer("%v", err)
	}
	return st, nil
}

func (l *lockerClient) Wait(ctx context.Context, group string, revision uint64) (LockState, error) {
	if err := sendable("group", group); err != nil {
		return LockState{}, err
	}
	resp, err := l.c.Wait(ctx, &pluginpb.WaitRequest{Group: group, Revision: revision})
	if err != nil {
		return LockState{}, fromStatus(err)
	}
	st, err := stateFromPB(resp, group)
	if err != nil {
		return LockState{}, badAnswer("%v", err)
	}
	if st.Revision == revision {
		return LockState{}, badAnswer("returned unchanged revision %d", revision)
	}
	return st, nil
}

func (l *lockerClient) SetSlots(ctx context.Context, group string, slots int) (LockState, error) {
	if err := sendable("group", group); err != nil {
		return LockState{}, err
	}
	resp, err := l.c.SetSlots(ctx, &pluginpb.SetSlotsRequest{Group: group, Slots: int64(slots)})
	if err != nil {
		return LockState{}, fromStatus(err)
	}
	st, err := stateFromPB(resp, group)
	if err != nil {
		return LockState{}, badAnswer("%v", err)
	}
	if st.Slots != slots {
		return LockState{}, badAnswer("asked for %d slots, state has %d", slots, st.Slots)
	}
	return st, nil
}

func (l *lockerClient) Freeze(ctx context.Context, req FreezeRequest) error {
	if err := sendable("group", req.Group, "reason", req.Reason, "by", req.By); err != nil {
		return err
	}
	_, err := l.c.Freeze(ctx, &pluginpb.FreezeRequest{Group: req.Group, Reason: req.Reason, By: req.By, At: tsToPB(req.At), Slots: int64(req.Slots)})
	return fromStatus(err)
}

func (l *lockerClient) Thaw(ctx context.Context, group string) error {
	if err := sendable("group", group); err != nil {
		return err
	}
	_, err := l.c.Thaw(ctx, &pluginpb.GroupRequest{Group: group})
	return fromStatus(err)
}

// sendable refuses, as ErrInvalidArgument, text the wire cannot carry:
// protobuf strings are UTF-8, and a call that fails to encode would
// otherwise look like a broken connection. pairs are field name, value.
func sendable(pairs ...string) error {
	for i := 0; i+1 < len(pairs); i += 2 {
		if !utf8.ValidString(pairs[i+1]) {
			return fmt.Errorf("%w: %s is not valid UTF-8", ErrInvalidArgument, pairs[i])
		}
	}
	return nil
}

type checkClient struct{ c pluginpb.HealthCheckClient }

func (c *checkClient) Check(ctx context.Context, req CheckRequest) (CheckResult, error) {
	phase, ok := phases[req.Phase]
	if !ok {
		return CheckResult{}, fmt.Errorf("%w: unknown phase %q", ErrInvalidArgument, req.Phase)
	}
	resp, err := c.c.Check(ctx, &pluginpb.CheckRequest{
		Name:  req.Name,
		Phase: phase,
		Node: &pluginpb.Node{
			Id:       req.Node.ID,
			Group:    req.Node.Group,
			Hostname: req.Node.Hostname,
			BootId:   req.Node.BootID,
		},
		ConfigJson: req.Config,
	})
	if err != nil {
		return CheckResult{}, fromStatus(err)
	}
	outcome, ok := outcomeFromPB(resp.GetOutcome())
	if !ok {
		return CheckResult{}, badAnswer("invalid outcome %v", resp.GetOutcome())
	}
	t, err := tsFromPB(resp.GetTime())
	if err != nil {
		return CheckResult{}, badAnswer("time: %v", err)
	}
	return CheckResult{Outcome: outcome, Reason: resp.GetReason(), Details: resp.GetDetails(), Time: t}, nil
}
