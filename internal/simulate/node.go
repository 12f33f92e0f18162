package simulate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/offpeak/offpeak/plugins"
	"github.com/offpeak/offpeak/scheduler"
)

// errKilled is what the adapters of a killed agent answer: the process is
// gone, so nothing it would still do has any effect.
var errKilled = errors.New("agent process killed")

type nodeStatus uint8

const (
	statusUp        nodeStatus = iota // the agent runs
	statusRebooting                   // the machine is rebooting
	statusDead                        // the agent was killed and is not back yet
)

// Kill phases, taken in turn by the nodes chosen for kill=FRACTION.
const (
	killRandom = iota
	killAtGrant
	killAtPreCheck
	killMidReboot
	killAtPostCheck
	numKillPhases
)

var killPhaseNames = [numKillPhases]string{
	killRandom:      "random moment",
	killAtGrant:     "slot just granted",
	killAtPreCheck:  "pre-reboot check, slot held",
	killMidReboot:   "mid-reboot",
	killAtPostCheck: "post-boot check",
}

// node is one simulated host.
type node struct {
	idx   int
	id    string
	group int
	clock *scheduler.FakeClock
	// store is the persisted agent state, JSON as a state file holds it.
	store []byte
	agent *scheduler.Agent
	inst  *instance

	status    nodeStatus
	boot      int
	staged    bool
	deadUntil time.Time
	starts    uint64

	// gen invalidates a pending step when another is scheduled.
	gen       uint64
	pending   bool
	pendingAt time.Time

	lastDecision scheduler.Decision
	lastPhase    scheduler.Phase
	lastFrozen   bool // the last pass saw the group frozen
	watch        bool // the agent loop watches the locker after the last pass
	requests     int

	bootedRound    int
	confirmedRound int
	rebootsInRound int

	killPhase int
	killRound int
	killDone  bool
	failRound int
	fixed     bool
	failing   bool

	cycle *cycle // the slot this node holds, as the simulator saw it granted
}

// instance is one agent process; killing it makes every adapter it holds
// refuse.
type instance struct{ dead bool }

// nodeLocker is the node's view of the lock service: it counts requests,
// injects outages and reports grants and releases to the simulator.
type nodeLocker struct {
	s    *sim
	n    *node
	inst *instance
}

// gate refuses the calls of a killed agent and, during an outage, every
// call; write says the call may change the group's state.
func (l nodeLocker) gate(write bool) error {
	if l.inst.dead {
		return fmt.Errorf("%w: %w", plugins.ErrUnavailable, errKilled)
	}
	l.n.requests++
	if !l.n.staged && l.n.lastPhase == scheduler.PhaseIdle {
		l.s.idleRequests++
	}
	if l.s.inOutage(l.n.clock.Now()) {
		l.s.outageRefusals++
		return fmt.Errorf("simulated lock-service outage: %w", plugins.ErrUnavailable)
	}
	if write {
		l.s.touched[l.n.group] = true
	}
	return nil
}

func (l nodeLocker) Acquire(ctx context.Context, req plugins.AcquireRequest) (plugins.AcquireResult, error) {
	if err := l.gate(true); err != nil {
		return plugins.AcquireResult{}, err
	}
	res, err := l.s.be.agents.Acquire(ctx, req)
	if err != nil {
		return res, err
	}
	for _, h := range res.Reclaimed {
		l.s.onReclaimed(h.ID)
	}
	if res.Granted {
		l.s.onGranted(l.n)
		if l.n.killPhase == killAtGrant && l.s.killDue(l.n) {
			l.s.killInStep(l.n, l.inst, killAtGrant)
		}
	}
	return res, nil
}

func (l nodeLocker) Release(ctx context.Context, req plugins.ReleaseRequest) error {
	if err := l.gate(true); err != nil {
		return err
	}
	err := l.s.be.agents.Release(ctx, req)
	if err == nil {
		l.s.onReleased(l.n)
	}
	return err
}

func (l nodeLocker) Status(ctx context.Context, group string) (plugins.LockState, error) {
	if err := l.gate(false); err != nil {
		return plugins.LockState{}, err
	}
	return l.s.be.agents.Status(ctx, group)
}

func (l nodeLocker) Wait(ctx context.Context, group string, revision uint64) (plugins.LockState, error) {
	if err := l.gate(false); err != nil {
		return plugins.LockState{}, err
	}
	return l.s.be.agents.Wait(ctx, group, revision)
}

func (l nodeLocker) Freeze(ctx context.Context, req plugins.FreezeRequest) error {
	if err := l.gate(true); err != nil {
		return err
	}
	err := l.s.be.agents.Freeze(ctx, req)
	if err == nil {
		l.s.onFreezeChanged(l.n.group, l.n.clock.Now(), true)
	}
	return err
}

// nodeStore keeps the state as JSON bytes, so a rebuilt agent resumes from
// exactly what was persisted.
type nodeStore struct {
	n    *node
	inst *instance
}

func (st nodeStore) Load(v any) error {
	if st.n.store == nil {
		return fmt.Errorf("simulated state: %w", fs.ErrNotExist)
	}
	if err := json.Unmarshal(st.n.store, v); err != nil {
		return fmt.Errorf("simulated state: %w", err)
	}
	return nil
}

func (st nodeStore) Save(v any) error {
	if st.inst.dead {
		return errKilled
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("simulated state: %w", err)
	}
	st.n.store = b
	return nil
}

// nodeDetector says whether the node's update is staged.
type nodeDetector struct {
	s *sim
	n *node
}

func (d nodeDetector) Detect(context.Context) scheduler.Detection {
	if d.n.staged {
		return scheduler.Detection{State: scheduler.StagedYes, Version: fmt.Sprintf("update-%d", d.s.round), Reason: "staged by the simulator"}
	}
	return scheduler.Detection{State: scheduler.StagedNo, Reason: "nothing staged"}
}

// nodeRebooter records the request and schedules the boot.
type nodeRebooter struct {
	s    *sim
	n    *node
	inst *instance
}

func (r nodeRebooter) Reboot(context.Context) error {
	if r.inst.dead {
		return errKilled
	}
	r.s.onReboot(r.n, r.inst)
	return nil
}

// nodeCheck answers every [[health]] entry: pre-reboot checks pass,
// post-boot checks fail on the nodes the faults chose until the operator
// fixes them.
type nodeCheck struct {
	s    *sim
	n    *node
	inst *instance
}

func (c nodeCheck) Check(_ context.Context, req plugins.CheckRequest) (plugins.CheckResult, error) {
	if c.inst.dead {
		return plugins.CheckResult{}, errKilled
	}
	s, n := c.s, c.n
	now := n.clock.Now()
	switch req.Phase {
	case plugins.PhasePreReboot:
		if n.killPhase == killAtPreCheck && s.killDue(n) {
			s.killInStep(n, c.inst, killAtPreCheck)
			return plugins.CheckResult{}, errKilled
		}
	case plugins.PhasePostBoot:
		if n.killPhase == killAtPostCheck && s.killDue(n) {
			s.killInStep(n, c.inst, killAtPostCheck)
			return plugins.CheckResult{}, errKilled
		}
		if n.failRound == s.round && !n.fixed {
			if !n.failing {
				n.failing = true
				s.onCheckFailed(n, now)
			}
			return plugins.CheckResult{Outcome: plugins.Fail, Reason: "simulated: the service did not come back", Time: now}, nil
		}
	}
	return plugins.CheckResult{Outcome: plugins.Pass, Reason: "simulated check passed", Time: now}, nil
}
