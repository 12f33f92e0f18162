package main

import (
	"encoding/json"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/offpeak/offpeak/plugins"
)

// service is the toy slot service: every group's state in memory, one
// counter (Revision) per group, and long-polling for wait.
type service struct {
	mu     sync.Mutex
	groups map[string]*group
}

type group struct {
	state   plugins.LockState
	changed chan struct{} // closed on every change
}

func newService() http.Handler {
	s := &service{groups: map[string]*group{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/acquire", handle(s.acquire))
	mux.HandleFunc("POST /v1/release", handle(s.release))
	mux.HandleFunc("POST /v1/status", handle(s.status))
	mux.HandleFunc("POST /v1/wait", handle(s.wait))
	mux.HandleFunc("POST /v1/set_slots", handle(s.setSlots))
	mux.HandleFunc("POST /v1/freeze", handle(s.freeze))
	mux.HandleFunc("POST /v1/thaw", handle(s.thaw))
	return mux
}

type svcError struct {
	status    int
	kind, msg string
}

func (e *svcError) Error() string { return e.msg }

// handle decodes the request body into In, runs fn and writes the answer.
func handle[In any](fn func(r *http.Request, in In) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var in In
		w.Header().Set("Content-Type", "application/json")
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&in); err != nil {
			w.WriteHeader(http.StatusBadRequest)
			_ = json.NewEncoder(w).Encode(apiError{Error: err.Error(), Kind: "invalid_argument"})
			return
		}
		out, err := fn(r, in)
		if err != nil {
			e, ok := err.(*svcError)
			if !ok {
				e = &svcError{status: http.StatusInternalServerError, msg: err.Error()}
			}
			w.WriteHeader(e.status)
			_ = json.NewEncoder(w).Encode(apiError{Error: e.msg, Kind: e.kind})
			return
		}
		_ = json.NewEncoder(w).Encode(out)
	}
}

// get returns the group, creating it with slots if new. Call with s.mu held.
func (s *service) get(name string, slots int) (*group, error) {
	if name == "" {
		return nil, &svcError{http.StatusBadRequest, "invalid_argument", "empty group"}
	}
	g, ok := s.groups[name]
	if !ok {
		g = &group{state: plugins.LockState{Group: name, Slots: slots, Holders: []plugins.Holder{}}, changed: make(chan struct{})}
		s.groups[name] = g
	}
	return g, nil
}

func (g *group) bump() {
	g.state.Revision++
	close(g.changed)
	g.changed = make(chan struct{})
}

func (g *group) snapshot() plugins.LockState {
	st := g.state
	st.Holders = slices.Clone(st.Holders)
	return st
}

func (s *service) acquire(_ *http.Request, req plugins.AcquireRequest) (any, error) {
	if req.Holder.ID == "" {
		return nil, &svcError{http.StatusBadRequest, "invalid_argument", "empty holder id"}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	g, err := s.get(req.Group, req.Slots)
	if err != nil {
		return nil, err
	}
	res := plugins.AcquireResult{}
	i := slices.IndexFunc(g.state.Holders, func(h plugins.Holder) bool { return h.ID == req.Holder.ID })
	switch {
	case i >= 0: // already a holder: refresh the record
		g.state.Holders[i] = req.Holder
		res.Granted = true
	case g.state.Frozen:
		return nil, &svcError{http.StatusConflict, "frozen", "group " + req.Group + " is frozen: " + g.state.FrozenReason}
	default:
		if req.ReclaimStale {
			now := req.Now
			if now.IsZero() {
				now = time.Now()
			}
			g.state.Holders = slices.DeleteFunc(g.state.Holders, func(h plugins.Holder) bool {
				stale := !h.Deadline.IsZero() && now.After(h.Deadline)
				if stale {
					res.Reclaimed = append(res.Reclaimed, h)
				}
				return stale
			})
		}
		if len(g.state.Holders) < g.state.Slots {
			req.Holder.AcquiredAt = time.Now().UTC()
			g.state.Holders = append(g.state.Holders, req.Holder)
			res.Granted = true
		}
	}
	if res.Granted || len(res.Reclaimed) > 0 {
		g.bump()
	}
	res.State = g.snapshot()
	return res, nil
}

func (s *service) release(_ *http.Request, req plugins.ReleaseRequest) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g, err := s.get(req.Group, 0)
	if err != nil {
		return nil, err
	}
	i := slices.IndexFunc(g.state.Holders, func(h plugins.Holder) bool { return h.ID == req.ID })
	if i < 0 {
		return nil, &svcError{http.StatusNotFound, "not_holder", req.ID + " holds no slot in " + req.Group}
	}
	g.state.Holders = slices.Delete(g.state.Holders, i, i+1)
	g.bump()
	return struct{}{}, nil
}

func (s *service) status(_ *http.Request, req groupReq) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g, err := s.get(req.Group, 0)
	if err != nil {
		return nil, err
	}
	return g.snapshot(), nil
}

// wait long-polls until the group's revision differs from the caller's or
// the caller goes away.
func (s *service) wait(r *http.Request, req groupReq) (any, error) {
	for {
		s.mu.Lock()
		g, err := s.get(req.Group, 0)
		if err != nil {
			s.mu.Unlock()
			return nil, err
		}
		if g.state.Revision != req.Revision {
			st := g.snapshot()
			s.mu.Unlock()
			return st, nil
		}
		ch := g.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-r.Context().Done():
			return nil, r.Context().Err()
		}
	}
}

func (s *service) setSlots(_ *http.Request, req groupReq) (any, error) {
	if req.Slots < 0 {
		return nil, &svcError{http.StatusBadRequest, "invalid_argument", "negative slots"}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	g, err := s.get(req.Group, req.Slots)
	if err != nil {
		return nil, err
	}
	g.state.Slots = req.Slots
	g.bump()
	return g.snapshot(), nil
}

func (s *service) freeze(_ *http.Request, req plugins.FreezeRequest) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g, err := s.get(req.Group, 0)
	if err != nil {
		return nil, err
	}
	g.state.Frozen, g.state.FrozenReason, g.state.FrozenBy, g.state.FrozenAt = true, req.Reason, req.By, req.At
	g.bump()
	return struct{}{}, nil
}

func (s *service) thaw(_ *http.Request, req groupReq) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g, err := s.get(req.Group, 0)
	if err != nil {
		return nil, err
	}
	g.state.Frozen, g.state.FrozenReason, g.state.FrozenBy, g.state.FrozenAt = false, "", "", time.Time{}
	g.bump()
	return struct{}{}, nil
}
