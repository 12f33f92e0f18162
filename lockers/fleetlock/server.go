package fleetlock

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/offpeak/offpeak/internal/redact"
	"github.com/offpeak/offpeak/plugins"
)

// ServerConfig configures a FleetLock server.
type ServerConfig struct {
	// Locker holds the slots. Required.
	Locker plugins.Locker
	Logger *slog.Logger
	// Group resolves a group name against the server's policy: ok false
	// means the server does not serve it, and a request for it gets
	// KindUnknownGroup, as in airlock, and creates nothing. slots is the
	// count a pre-reboot creates the group with; 0 takes the count an
	// offpeak client asks for, else 1. Required (see Groups).
	Group func(name string) (slots int, ok bool)
	// StaleAfter is the server's own stale_after: a holder whose grant (or
	// last refreshed grant) is older than this by the server's clock may be
	// reclaimed by the next pre-reboot. Zero: never. What a client says
	// about time or staleness is ignored.
	StaleAfter time.Duration
	// Allowed, when set, gates pre-reboot: outside a maintenance window the
	// answer is KindOutsideWindow. Steady-state is always accepted.
	Allowed func(time.Time) bool
	// Now is the clock (default time.Now).
	Now func() time.Time
	// AdminToken enables the slots, freeze and thaw endpoints for requests
	// bearing it. Empty disables them.
	AdminToken string
	// MaxWait caps a wait long poll (default 55s, below common proxy
	// timeouts).
	MaxWait time.Duration
}

// Server is a FleetLock server; it is an http.Handler.
type Server struct {
	cfg ServerConfig
	log *slog.Logger
	mux *http.ServeMux
}

// NewServer checks cfg and returns the server.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.Locker == nil {
		return nil, fmt.Errorf("%w: fleetlock server needs a locker", plugins.ErrInvalidArgument)
	}
	if cfg.Group == nil {
		return nil, fmt.Errorf("%w: fleetlock server needs the groups it serves", plugins.ErrInvalidArgument)
	}
	if cfg.StaleAfter < 0 {
		return nil, fmt.Errorf("%w: stale_after %s is negative", plugins.ErrInvalidArgument, cfg.StaleAfter)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxWait <= 0 {
		cfg.MaxWait = 55 * time.Second
	}
	s := &Server{cfg: cfg, log: cfg.Logger}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.mux = http.NewServeMux()
	s.mux.HandleFunc(PathPreReboot, s.post(s.preReboot))
	s.mux.HandleFunc(PathSteadyState, s.post(s.steadyState))
	s.mux.HandleFunc(PathStatus, s.get(s.status))
	s.mux.HandleFunc(PathWait, s.get(s.wait))
	s.mux.HandleFunc(PathSlots, s.post(s.admin(s.setSlots)))
	s.mux.HandleFunc(PathFreeze, s.post(s.admin(s.freeze)))
	s.mux.HandleFunc(PathThaw, s.post(s.admin(s.thaw)))
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, ErrorReply{Kind: KindNotFound, Value: "no such endpoint: " + r.URL.Path})
	})
	return s, nil
}

// Groups returns a ServerConfig.Group serving exactly the groups of m, each
// created with its slot count.
func Groups(m map[string]int) func(string) (int, bool) {
	return func(name string) (int, bool) {
		n, ok := m[name]
		return n, ok
	}
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// httpError is a reply the handlers return instead of writing it.
type httpError struct {
	code int
	ErrorReply
}

func (e *httpError) Error() string { return e.Kind + ": " + e.Value }

func replyErr(code int, kind, format string, args ...any) *httpError {
	return &httpError{code: code, ErrorReply: ErrorReply{Kind: kind, Value: fmt.Sprintf(format, args...)}}
}

type handler func(w http.ResponseWriter, r *http.Request, body []byte) (any, *httpError)

func (s *Server) post(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			writeError(w, http.StatusMethodNotAllowed, ErrorReply{Kind: KindMethod, Value: r.Method + " not allowed, use POST"})
			return
		}
		if r.Header.Get(HeaderProtocol) != "true" {
			writeError(w, http.StatusBadRequest, ErrorReply{Kind: KindInvalidIdentity, Value: "missing or wrong 'fleet-lock-protocol' header"})
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
		if err != nil {
			writeError(w, http.StatusRequestEntityTooLarge, ErrorReply{Kind: KindBadRequest, Value: "body too large or unreadable: " + err.Error()})
			return
		}
		s.finish(w, r, h, body)
	}
}

func (s *Server) get(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			w.Header().Set("Allow", http.MethodGet)
			writeError(w, http.StatusMethodNotAllowed, ErrorReply{Kind: KindMethod, Value: r.Method + " not allowed, use GET"})
			return
		}
		s.finish(w, r, h, nil)
	}
}

func (s *Server) finish(w http.ResponseWriter, r *http.Request, h handler, body []byte) {
	out, herr := h(w, r, body)
	if herr != nil {
		// The message may quote a freeze reason or a backend's error.
		herr.Value = redact.String(herr.Value)
		if herr.code >= 500 {
			s.log.Error("fleetlock request failed", "path", r.URL.Path, "kind", herr.Kind, "error", herr.Value)
		}
		if herr.State != nil {
			st := s.public(r, *herr.State)
			herr.State = &st
		}
		writeError(w, herr.code, herr.ErrorReply)
		return
	}
	switch v := out.(type) {
	case plugins.LockState:
		out = s.public(r, v)
	case PreRebootReply:
		v.State = s.public(r, v.State)
		v.Reclaimed = redact.Holders(v.Reclaimed)
		out = v
	case SteadyStateReply:
		v.State = s.public(r, v.State)
		out = v
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_ = json.NewEncoder(w).Encode(out)
}

func writeError(w http.ResponseWriter, code int, e ErrorReply) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(e)
}

// public returns st fit to serve: holder records are read by every client
// of the group, so a secret one of them carries (see redact.Holder) is
// never echoed, whoever stored it.
func (s *Server) public(r *http.Request, st plugins.LockState) plugins.LockState {
	out, fields := redact.LockState(st)
	if len(fields) > 0 {
		s.log.Debug("secrets hidden in a fleetlock answer", "path", r.URL.Path, "group", st.Group, "fields", fields)
	}
	return out
}

// refuseSecrets refuses a record that would be public and holds a secret;
// the answer names the fields, never the values.
func refuseSecrets(what string, fields []string) *httpError {
	if len(fields) == 0 {
		return nil
	}
	return replyErr(http.StatusBadRequest, KindBadRequest,
		"%s fields %s look like secrets (URL user info or query values, a secret key or KEY=VALUE, or a token); they are public to every client of the group, so they are not stored",
		what, strings.Join(fields, ", "))
}

// admin guards an operator endpoint with the admin token.
func (s *Server) admin(h handler) handler {
	return func(w http.ResponseWriter, r *http.Request, body []byte) (any, *httpError) {
		if s.cfg.AdminToken == "" {
			return nil, replyErr(http.StatusForbidden, KindAdminDisabled, "this server has no admin token; %s is disabled", r.URL.Path)
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(s.cfg.AdminToken)) != 1 {
			return nil, replyErr(http.StatusUnauthorized, KindUnauthorized, "missing or wrong admin token")
		}
		return h(w, r, body)
	}
}

// lockerErr maps a locker error to a reply.
func lockerErr(err error) *httpError {
	switch {
	case errors.Is(err, plugins.ErrFrozen):
		return replyErr(http.StatusConflict, KindFrozen, "%v", err)
	case errors.Is(err, plugins.ErrNodeIDCollision):
		return replyErr(http.StatusConflict, KindNodeIDCollision, "%v", err)
	case errors.Is(err, plugins.ErrInvalidArgument):
		return replyErr(http.StatusBadRequest, KindBadRequest, "%v", err)
	case errors.Is(err, plugins.ErrConflict):
		return replyErr(http.StatusServiceUnavailable, KindFailedLock, "%v", err)
	case errors.Is(err, plugins.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		return replyErr(http.StatusServiceUnavailable, KindUnavailable, "%v", err)
	}
	return replyErr(http.StatusInternalServerError, KindInternal, "%v", err)
}

// identity parses a pre-reboot or steady-state body and checks what the
// client says about itself: printable names of a group this server serves,
// and printable holder fields.
func (s *Server) identity(body []byte) (Request, *httpError) {
	req, err := ParseRequest(body)
	if err == nil {
		err = plugins.ValidateName("client ID", req.ClientParams.ID)
	}
	if err == nil {
		err = plugins.ValidateName("client group", req.ClientParams.Group)
	}
	if e := req.Offpeak; err == nil && e != nil && e.Holder != nil {
		h := *e.Holder
		h.ID = req.ClientParams.ID
		err = plugins.ValidateHolder(h)
	}
	if e := req.Offpeak; err == nil && e != nil {
		err = plugins.ValidateAcquire(plugins.AcquireRequest{Group: req.ClientParams.Group, Holder: plugins.Holder{ID: req.ClientParams.ID}, PreviousBootID: e.PreviousBootID})
	}
	if err != nil {
		return Request{}, replyErr(http.StatusBadRequest, KindInvalidIdentity, "failed to validate client identity: %v", err)
	}
	if herr := s.served(req.ClientParams.Group); herr != nil {
		return Request{}, herr
	}
	return req, nil
}

// served refuses a group the server's policy does not name.
func (s *Server) served(group string) *httpError {
	if err := plugins.ValidateName("group", group); err != nil {
		return replyErr(http.StatusBadRequest, KindBadRequest, "%v", err)
	}
	if _, ok := s.cfg.Group(group); !ok {
		return replyErr(http.StatusBadRequest, KindUnknownGroup, "unknown group %q", group)
	}
	return nil
}

// slotsFor picks the slot count for a group the request may create: the
// server's policy wins over what an offpeak client asks for.
func (s *Server) slotsFor(group string, ext *RequestExt) int {
	if n, _ := s.cfg.Group(group); n > 0 {
		return n
	}
	if ext != nil && ext.Slots > 0 {
		return ext.Slots
	}
	return 1
}

func (s *Server) preReboot(_ http.ResponseWriter, r *http.Request, body []byte) (any, *httpError) {
	req, herr := s.identity(body)
	if herr != nil {
		return nil, herr
	}
	now := s.cfg.Now()
	if s.cfg.Allowed != nil && !s.cfg.Allowed(now) {
		return nil, replyErr(http.StatusConflict, KindOutsideWindow, "no reboot may start now (%s): outside the maintenance window", now.UTC().Format(time.RFC3339))
	}
	ar := plugins.AcquireRequest{
		Group:  req.ClientParams.Group,
		Holder: plugins.Holder{ID: req.ClientParams.ID},
		Slots:  s.slotsFor(req.ClientParams.Group, req.Offpeak),
		// Staleness is the server's call alone: its clock, its stale_after.
		// A client's clock or reclaim flag never frees another node's slot.
		ReclaimStale: s.cfg.StaleAfter > 0,
		Now:          now,
	}
	if e := req.Offpeak; e != nil {
		if e.Holder != nil {
			ar.Holder = *e.Holder
			ar.Holder.ID = req.ClientParams.ID
		}
		ar.PreviousBootID = e.PreviousBootID
	}
	ar.Holder.AcquiredAt, ar.Holder.Deadline = time.Time{}, time.Time{}
	if s.cfg.StaleAfter > 0 {
		ar.Holder.Deadline = now.Add(s.cfg.StaleAfter)
	}
	if _, fields := redact.Holder(ar.Holder); len(fields) > 0 {
		return nil, refuseSecrets("holder record", fields)
	}
	res, err := s.cfg.Locker.Acquire(r.Context(), ar)
	if err != nil {
		herr := lockerErr(err)
		if errors.Is(err, plugins.ErrFrozen) && res.State.Group != "" {
			herr.State = &res.State
		}
		return nil, herr
	}
	for _, h := range res.Reclaimed {
		s.log.Warn("reclaimed stale slot", "group", ar.Group, "holder", h.ID, "by", ar.Holder.ID)
	}
	if !res.Granted && res.State.Frozen {
		herr := replyErr(http.StatusConflict, KindFrozen, "group %q is frozen: %s", ar.Group, res.State.FrozenReason)
		herr.State = &res.State
		return nil, herr
	}
	if !res.Granted {
		herr := replyErr(http.StatusConflict, KindFailedLock, "all %d semaphore slots currently locked", res.State.Slots)
		herr.State = &res.State
		return nil, herr
	}
	s.log.Info("granted reboot slot", "group", ar.Group, "id", ar.Holder.ID)
	return PreRebootReply{Granted: true, State: res.State, Reclaimed: res.Reclaimed}, nil
}

func (s *Server) steadyState(_ http.ResponseWriter, r *http.Request, body []byte) (any, *httpError) {
	req, herr := s.identity(body)
	if herr != nil {
		return nil, herr
	}
	rr := plugins.ReleaseRequest{Group: req.ClientParams.Group, ID: req.ClientParams.ID, Reason: "steady-state reported"}
	if req.Offpeak != nil && req.Offpeak.Reason != "" {
		rr.Reason = req.Offpeak.Reason
	}
	err := s.cfg.Locker.Release(r.Context(), rr)
	released := err == nil
	// FleetLock clients report steady-state on every boot; not holding a
	// slot then is normal and still a success.
	if err != nil && !errors.Is(err, plugins.ErrNotHolder) {
		return nil, lockerErr(err)
	}
	st, err := s.cfg.Locker.Status(r.Context(), rr.Group)
	if err != nil {
		// The release itself succeeded; report it without a state.
		st = plugins.LockState{Group: rr.Group}
	}
	if released {
		s.log.Info("released reboot slot", "group", rr.Group, "id", rr.ID)
	}
	return SteadyStateReply{Released: released, State: st}, nil
}

func groupParam(r *http.Request) (string, *httpError) {
	g := r.URL.Query().Get("group")
	if g == "" {
		return "", replyErr(http.StatusBadRequest, KindBadRequest, "query parameter group is required")
	}
	return g, nil
}

func (s *Server) status(_ http.ResponseWriter, r *http.Request, _ []byte) (any, *httpError) {
	g, herr := groupParam(r)
	if herr != nil {
		return nil, herr
	}
	if herr := s.served(g); herr != nil {
		return nil, herr
	}
	st, err := s.cfg.Locker.Status(r.Context(), g)
	if err != nil {
		return nil, lockerErr(err)
	}
	return st, nil
}

func (s *Server) wait(_ http.ResponseWriter, r *http.Request, _ []byte) (any, *httpError) {
	g, herr := groupParam(r)
	if herr != nil {
		return nil, herr
	}
	if herr := s.served(g); herr != nil {
		return nil, herr
	}
	q := r.URL.Query()
	rev, err := strconv.ParseUint(q.Get("revision"), 10, 64)
	if err != nil {
		return nil, replyErr(http.StatusBadRequest, KindBadRequest, "revision must be an unsigned integer")
	}
	timeout := s.cfg.MaxWait
	if t := q.Get("timeout"); t != "" {
		d, err := time.ParseDuration(t)
		if err != nil || d <= 0 {
			return nil, replyErr(http.StatusBadRequest, KindBadRequest, "timeout must be a positive duration such as 30s")
		}
		timeout = min(d, s.cfg.MaxWait)
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	st, err := s.cfg.Locker.Wait(ctx, g, rev)
	if err != nil {
		if ctx.Err() != nil && r.Context().Err() == nil {
			// The long poll timed out: answer with the unchanged state so
			// the client simply asks again.
			st, err = s.cfg.Locker.Status(r.Context(), g)
			if err == nil {
				return st, nil
			}
		}
		return nil, lockerErr(err)
	}
	return st, nil
}

func decodeStrict(body []byte, v any) *httpError {
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return replyErr(http.StatusBadRequest, KindBadRequest, "bad request body: %v", err)
	}
	return nil
}

func (s *Server) setSlots(_ http.ResponseWriter, r *http.Request, body []byte) (any, *httpError) {
	var req SlotsRequest
	if herr := decodeStrict(body, &req); herr != nil {
		return nil, herr
	}
	if herr := s.served(req.Group); herr != nil {
		return nil, herr
	}
	st, err := s.cfg.Locker.SetSlots(r.Context(), req.Group, req.Slots)
	if err != nil {
		return nil, lockerErr(err)
	}
	s.log.Info("slot count changed", "group", req.Group, "slots", req.Slots)
	return st, nil
}

func (s *Server) freeze(_ http.ResponseWriter, r *http.Request, body []byte) (any, *httpError) {
	var req plugins.FreezeRequest
	if herr := decodeStrict(body, &req); herr != nil {
		return nil, herr
	}
	if herr := s.served(req.Group); herr != nil {
		return nil, herr
	}
	// A group the freeze creates gets the policy's count at the thaw.
	req.Slots = s.slotsFor(req.Group, &RequestExt{Slots: req.Slots})
	if _, fields := redact.LockState(plugins.LockState{FrozenReason: req.Reason, FrozenBy: req.By}); len(fields) > 0 {
		return nil, refuseSecrets("freeze", fields)
	}
	if err := s.cfg.Locker.Freeze(r.Context(), req); err != nil {
		return nil, lockerErr(err)
	}
	return s.status(nil, withGroup(r, req.Group), nil)
}

func (s *Server) thaw(_ http.ResponseWriter, r *http.Request, body []byte) (any, *httpError) {
	var req GroupRequest
	if herr := decodeStrict(body, &req); herr != nil {
		return nil, herr
	}
	if herr := s.served(req.Group); herr != nil {
		return nil, herr
	}
	if err := s.cfg.Locker.Thaw(r.Context(), req.Group); err != nil {
		return nil, lockerErr(err)
	}
	return s.status(nil, withGroup(r, req.Group), nil)
}

func withGroup(r *http.Request, group string) *http.Request {
	r2 := r.Clone(r.Context())
	q := r2.URL.Query()
	q.Set("group", group)
	r2.URL.RawQuery = q.Encode()
	return r2
}

// ServerTLSConfig builds the TLS settings of `offpeak fleetlock serve`.
// With clientCAFile every client must present a certificate signed by it.
func ServerTLSConfig(certFile, keyFile, clientCAFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("%w: server certificate: %w", plugins.ErrInvalidArgument, err)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if clientCAFile != "" {
		pem, err := os.ReadFile(clientCAFile)
		if err != nil {
			return nil, fmt.Errorf("%w: client CA: %w", plugins.ErrInvalidArgument, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: client CA %s holds no PEM certificate", plugins.ErrInvalidArgument, clientCAFile)
		}
		tc.ClientCAs = pool
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return tc, nil
}
