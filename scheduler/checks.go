package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/offpeak/offpeak/plugins"
	"github.com/offpeak/offpeak/scheduler/policy"
)

func (a *Agent) backoff() time.Duration {
	base := a.pol.Agent.Interval.D()
	if base <= 0 {
		base = time.Minute
	}
	d := base << min(a.st.CheckFailures-1, 5)
	return min(d, time.Hour)
}

func (a *Agent) checksFor(phase policy.Phase) []policy.Health {
	var out []policy.Health
	for _, h := range a.pol.Health {
		if h.Phase == phase {
			out = append(out, h)
		}
	}
	return out
}

// runChecks runs the checks of a phase in order and returns the first that
// did not pass, or nil.
func (a *Agent) runChecks(ctx context.Context, phase policy.Phase, r *Result) *CheckRecord {
	node := plugins.Node{ID: a.opts.NodeID, Group: a.pol.Node.Group, Hostname: a.opts.Hostname, BootID: a.st.BootID}
	for _, h := range a.checksFor(phase) {
		rec := a.runCheck(ctx, h, node)
		if a.st.Checks == nil {
			a.st.Checks = map[string]CheckRecord{}
		}
		a.st.Checks[h.Name] = rec
		if rec.Outcome == plugins.Pass || (rec.Outcome == plugins.Error && h.OnError == policy.OnErrorPass) {
			continue
		}
		return &rec
	}
	return nil
}

func (a *Agent) runCheck(ctx context.Context, h policy.Health, node plugins.Node) CheckRecord {
	rec := CheckRecord{Name: h.Name, Plugin: h.Plugin, Phase: h.Phase}
	cfg, err := json.Marshal(h.Config)
	if err != nil {
		rec.Outcome, rec.Reason, rec.Time = plugins.Error, "config: "+err.Error(), a.opts.Clock.Now()
		return rec
	}
	attempts := 1 + max(h.Retries, 0)
	for i := range attempts {
		rec.Attempts = i + 1
		rec.Outcome, rec.Reason = a.checkOnce(ctx, h, node, cfg)
		rec.Time = a.opts.Clock.Now()
		if rec.Outcome == plugins.Pass || i == attempts-1 {
			break
		}
		if err := Sleep(ctx, a.opts.Clock, h.Interval.D()); err != nil {
			break
		}
	}
	a.log.Info("check", "name", h.Name, "phase", h.Phase, "outcome", rec.Outcome, "reason", rec.Reason, "attempts", rec.Attempts)
	return rec
}

// checkOnce runs a check under its timeout. Anything but a valid answer is
// an error outcome: a check that cannot answer never counts as a pass.
func (a *Agent) checkOnce(ctx context.Context, h policy.Health, node plugins.Node, cfg json.RawMessage) (plugins.Outcome, string) {
	if a.opts.Checks == nil {
		return plugins.Error, "no health check runner"
	}
	hc, err := a.opts.Checks(h.Plugin)
	if err != nil {
		return plugins.Error, err.Error()
	}
	timeout := h.Timeout.D()
	c, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	res, err := hc.Check(c, plugins.CheckRequest{Name: h.Name, Phase: plugins.Phase(h.Phase), Node: node, Config: cfg})
	switch {
	case ctx.Err() == nil && (c.Err() != nil || errors.Is(err, context.DeadlineExceeded)):
		// A plugin host may give up a moment before the deadline it
		// forwards; either way the check ran out of its time.
		return plugins.Error, fmt.Sprintf("timed out after %s", policy.FormatDuration(timeout))
	case err != nil:
		return plugins.Error, err.Error()
	case !res.Outcome.Valid():
		return plugins.Error, fmt.Sprintf("bad answer: outcome %q", res.Outcome)
	}
	reason := res.Reason
	if reason == "" {
		reason = string(res.Outcome)
	}
	return res.Outcome, reason
}
