package main

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/offpeak/offpeak/lockers/memlocker"
	"github.com/offpeak/offpeak/plugins"
)

// newService is the toy slot service: offpeak's in-memory locker behind a
// JSON-over-HTTP API, POST /v1/<method>; wait long-polls. Its state is
// gone when the process ends.
func newService() http.Handler {
	l := memlocker.New()
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/acquire", handle(func(r *http.Request, req plugins.AcquireRequest) (any, error) {
		return l.Acquire(r.Context(), req)
	}))
	mux.HandleFunc("POST /v1/release", handle(func(r *http.Request, req plugins.ReleaseRequest) (any, error) {
		return struct{}{}, l.Release(r.Context(), req)
	}))
	mux.HandleFunc("POST /v1/status", handle(func(r *http.Request, req groupReq) (any, error) {
		return l.Status(r.Context(), req.Group)
	}))
	mux.HandleFunc("POST /v1/wait", handle(func(r *http.Request, req groupReq) (any, error) {
		return l.Wait(r.Context(), req.Group, req.Revision)
	}))
	mux.HandleFunc("POST /v1/set_slots", handle(func(r *http.Request, req groupReq) (any, error) {
		return l.SetSlots(r.Context(), req.Group, req.Slots)
	}))
	mux.HandleFunc("POST /v1/freeze", handle(func(r *http.Request, req plugins.FreezeRequest) (any, error) {
		return struct{}{}, l.Freeze(r.Context(), req)
	}))
	mux.HandleFunc("POST /v1/thaw", handle(func(r *http.Request, req groupReq) (any, error) {
		return struct{}{}, l.Thaw(r.Context(), req.Group)
	}))
	return mux
}

// handle decodes the request body into In, runs fn and writes the answer,
// or the error with its kind (see errorKinds).
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
			status, kind := http.StatusInternalServerError, ""
			for k, sentinel := range errorKinds {
				if errors.Is(err, sentinel) {
					status, kind = http.StatusConflict, k
				}
			}
			if kind == "invalid_argument" {
				status = http.StatusBadRequest
			}
			w.WriteHeader(status)
			_ = json.NewEncoder(w).Encode(apiError{Error: err.Error(), Kind: kind})
			return
		}
		_ = json.NewEncoder(w).Encode(out)
	}
}
