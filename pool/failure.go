package pool

import (
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/nomad/api"
)

// A broken template (a command that does not exist, a constraint no node
// meets, more memory than the node has) must fail loudly and cheaply. Every
// warm instance that dies unclaimed, or is retired because it never turned
// warm, is a failure of its pool's template: the next dispatch backs off
// exponentially (failureBase up to failureMax) and only one instance at a
// time is tried until one turns warm, which resets the count. The reason is
// Nomad's own, read once per failure: the failed task's event, or the
// scheduler's placement metrics. After failingAfter consecutive failures, or
// at once for an instance the scheduler cannot place, the pool is failing:
// Stats.Error says why, and a claim that finds no warm allocation fails at
// once with ErrFailing instead of waiting for one that will not come.

// ErrFailing is returned (wrapped, with Nomad's reason) by a Claim on a pool
// whose template fails and that has no warm allocation.
var ErrFailing = errors.New("pool is failing")

const (
	failureBase  = time.Second
	failureMax   = 5 * time.Minute
	failingAfter = 3 // consecutive failures before a pool counts as failing
	// failureWatchEvery is how often the jobspec of a failing pool is read
	// again, so a fixed template takes effect quickly (others wait for the
	// reconcile pass).
	failureWatchEvery = 5 * time.Second
)

// unplaced is a starting instance the scheduler could not place, and why.
type unplaced struct {
	hash   string
	index  uint64 // of the job summary the reason was read for
	reason string // "" while it is being read, or when it is not the template's fault
	// waiting: read, and the scheduler considered no node (this one not
	// ready yet); read again by failureWatchLoop, as the summary may not
	// change when the node turns ready and the placement still fails.
	waiting bool
	// evaluated counts the evaluations asked for while waiting: the
	// scheduler's first one may have run before this node was ready, and
	// a blocked evaluation is not always run again when it is.
	evaluated int
}

// maxForcedEvals bounds the evaluations asked for one unplaced instance.
const maxForcedEvals = 3

// noteFailure counts a failure of p's template and pushes its next dispatch
// back. reason, when known, is Nomad's and replaces the last one.
func (p *pool) noteFailure(now time.Time, err error, reason string) {
	p.failures++
	p.lastErr = err
	if reason != "" {
		p.failReason = reason
	}
	p.retryAt = now.Add(backoff(p.failures-1, p.failureBase, failureMax))
}

// resetFailures forgets p's failures: an instance turned warm, or the
// template changed.
func (p *pool) resetFailures() {
	p.failures, p.failReason, p.retryAt, p.readyErr = 0, "", time.Time{}, ""
}

// failing says why p's template fails, or "".
func (p *pool) failing() string {
	if p.denied != "" {
		return p.denied
	}
	if p.tmpl != nil {
		var reasons []string
		for _, u := range p.unplaced {
			if u.hash == p.tmpl.hash && u.reason != "" {
				reasons = append(reasons, u.reason)
			}
		}
		if len(reasons) > 0 {
			slices.Sort(reasons)
			return "warm instance cannot be placed on this node: " + reasons[0]
		}
	}
	if p.failures >= failingAfter && p.failReason != "" {
		return fmt.Sprintf("warm instances die before turning warm (%d in a row): %s", failingAfter, p.failReason)
	}
	return ""
}

// explainFailure reads from Nomad why a warm instance died or never turned
// warm, and records it on its pool. It is called before the instance is
// purged: its allocations and evaluations go with it.
func (m *Manager) explainFailure(ctx context.Context, p *pool, in *instance) {
	reason, err := m.failureReason(ctx, in)
	if err != nil {
		m.log.Warn("cannot read why a warm instance failed", "pool", in.pool, "job_id", in.jobID, "error", err)
		return
	}
	if reason == "" {
		return
	}
	m.log.Warn("warm instance failed", "pool", in.pool, "job_id", in.jobID, "reason", reason)
	m.mu.Lock()
	if p.failures > 0 { // not reset by a warm instance meanwhile
		p.failReason = reason
		p.lastErr = fmt.Errorf("warm instance %s failed: %s", in.jobID, reason)
	}
	m.signalChangeLocked()
	m.mu.Unlock()
}

// failureReason is Nomad's reason for a failed instance: the failed task's
// event when it got an allocation, else why the scheduler did not place it.
func (m *Manager) failureReason(ctx context.Context, in *instance) (string, error) {
	var allocs []*api.AllocationListStub
	err := call(ctx, retryAttempts, func(ctx context.Context) error {
		var err error
		allocs, _, err = m.client.Jobs().Allocations(in.jobID, true, m.queryOpts(ctx, m.namespace))
		return err
	})
	if err != nil {
		return "", fmt.Errorf("read allocations of %s: %w", in.jobID, err)
	}
	if len(allocs) == 0 {
		return m.placementReason(ctx, in)
	}
	a := slices.MaxFunc(allocs, func(a, b *api.AllocationListStub) int { return cmp.Compare(a.CreateIndex, b.CreateIndex) })
	return taskFailure(a, in.task), nil
}

// taskFailure says what Nomad reports for the warm task of a dead
// allocation: the event that failed it, else its last event.
func taskFailure(a *api.AllocationListStub, task string) string {
	names := slices.Sorted(maps.Keys(a.TaskStates))
	if task != "" && a.TaskStates[task] != nil {
		names = []string{task}
	}
	var last string
	for _, name := range names {
		ts := a.TaskStates[name]
		if ts == nil {
			continue
		}
		// The event that says why it stopped; an event that only
		// follows from it (Not Restarting) also fails the task.
		var pick, fails *api.TaskEvent
		for _, ev := range ts.Events {
			switch {
			case ev == nil:
			case failureEvent[ev.Type]:
				pick = ev
			case ev.FailsTask:
				fails = ev
			}
		}
		if pick == nil {
			pick = fails
		}
		if pick != nil {
			return fmt.Sprintf("task %q: %s: %s", name, pick.Type, eventText(pick))
		}
		if n := len(ts.Events); n > 0 && ts.Events[n-1] != nil {
			last = fmt.Sprintf("task %q: %s: %s", name, ts.Events[n-1].Type, eventText(ts.Events[n-1]))
		}
	}
	switch {
	case last != "":
		return last
	case a.ClientDescription != "":
		return "allocation " + a.ClientStatus + ": " + a.ClientDescription
	}
	return "allocation " + a.ClientStatus
}

// failureEvent holds the task event types that say why a task stopped.
var failureEvent = map[string]bool{
	api.TaskSetupFailure: true, api.TaskDriverFailure: true, api.TaskFailedValidation: true,
	api.TaskArtifactDownloadFailed: true, api.TaskTerminated: true, api.TaskKilled: true,
	"Task hook failed": true, "Template": true,
}

// eventText is an event's message, from the fields Nomad fills for its type.
func eventText(ev *api.TaskEvent) string {
	for _, s := range []string{ev.DisplayMessage, ev.DriverError, ev.SetupError, ev.ValidationError, ev.DownloadError, ev.Message, ev.KillError} {
		if s = strings.TrimSpace(s); s != "" {
			return s
		}
	}
	if ev.Type == api.TaskTerminated {
		return fmt.Sprintf("exit code %d, signal %d", ev.ExitCode, ev.Signal)
	}
	return "no message"
}

// placementReason says why the scheduler placed no allocation for in, from
// the metrics of its evaluations.
func (m *Manager) placementReason(ctx context.Context, in *instance) (string, error) {
	var evals []*api.Evaluation
	err := call(ctx, retryAttempts, func(ctx context.Context) error {
		var err error
		evals, _, err = m.client.Jobs().Evaluations(in.jobID, m.queryOpts(ctx, m.namespace))
		return err
	})
	if err != nil {
		return "", fmt.Errorf("read evaluations of %s: %w", in.jobID, err)
	}
	// The evaluation the scheduler ran last first (a blocked one that was
	// run again carries the newer metrics).
	slices.SortFunc(evals, func(a, b *api.Evaluation) int { return cmp.Compare(b.ModifyIndex, a.ModifyIndex) })
	for _, ev := range evals {
		for _, tg := range slices.Sorted(maps.Keys(ev.FailedTGAllocs)) {
			if mt := ev.FailedTGAllocs[tg]; mt != nil {
				if mt.NodesEvaluated == 0 {
					// No node was considered (this one not ready yet):
					// nothing said about the template.
					return "", nil
				}
				return placementText(mt, m.nodeID), nil
			}
		}
	}
	return "", nil
}

// placementText sums up a failed placement: the constraints that filtered
// the node (leaving out the pool's own pin to this node, which only filters
// the others) and the resources it lacked.
func placementText(mt *api.AllocationMetric, nodeID string) string {
	var parts []string
	for _, c := range slices.Sorted(maps.Keys(mt.ConstraintFiltered)) {
		if !strings.Contains(c, nodeID) {
			parts = append(parts, fmt.Sprintf("constraint %q filtered it", c))
		}
	}
	for _, c := range slices.Sorted(maps.Keys(mt.ClassFiltered)) {
		parts = append(parts, fmt.Sprintf("node class %q filtered", c))
	}
	for _, d := range slices.Sorted(maps.Keys(mt.DimensionExhausted)) {
		parts = append(parts, fmt.Sprintf("not enough %s", d))
	}
	for _, q := range mt.QuotaExhausted {
		parts = append(parts, "quota exhausted: "+q)
	}
	if len(parts) == 0 {
		return fmt.Sprintf("no eligible node (%d evaluated, %d filtered, %d exhausted)", mt.NodesEvaluated, mt.NodesFiltered, mt.NodesExhausted)
	}
	return strings.Join(parts, "; ")
}

// explainUnplaced reads why the scheduler could not place a starting
// instance and records it; the instance stays (Nomad places it once the
// node can take it) until it is retired as too slow to start.
func (m *Manager) explainUnplaced(p *pool, in *instance) {
	ctx, cancel := context.WithTimeout(m.ctx, cleanupTimeout)
	defer cancel()
	reason, err := m.placementReason(ctx, in)
	m.mu.Lock()
	prev, ok := p.unplaced[in.jobID]
	m.mu.Unlock()
	forced := 0
	if ok && err == nil && reason == "" && prev.evaluated < maxForcedEvals {
		// No node was considered: ask for an evaluation now that this
		// node runs the plugin; the next read sees its metrics.
		if _, _, eerr := m.client.Jobs().EvaluateWithOpts(in.jobID, api.EvalOptions{}, m.writeOpts(ctx, m.namespace)); eerr != nil {
			m.log.Debug("cannot ask for an evaluation of a waiting warm instance", "job_id", in.jobID, "error", eerr)
		}
		forced = 1
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	u, ok := p.unplaced[in.jobID]
	if !ok || u.index != in.summaryIndex { // placed, gone, or read again meanwhile
		return
	}
	u.evaluated += forced
	switch {
	case err != nil:
		m.log.Warn("cannot read why a warm instance is not placed", "pool", in.pool, "job_id", in.jobID, "error", err)
		delete(p.unplaced, in.jobID) // the next rebuild tries again
		return
	case reason == "":
		// This node was not even considered (not ready yet, at agent
		// boot): Nomad places the instance once it is; no failure.
		m.log.Debug("warm instance waits for this node to be eligible", "pool", in.pool, "job_id", in.jobID)
		u.waiting = true
		p.unplaced[in.jobID] = u
		return
	}
	if u.reason == "" {
		m.log.Warn("warm instance cannot be placed", "pool", in.pool, "job_id", in.jobID, "reason", reason)
	}
	u.reason = reason
	p.unplaced[in.jobID] = u
	p.lastErr = fmt.Errorf("warm instance %s cannot be placed: %s", in.jobID, reason)
	m.signalChangeLocked()
}

// trackUnplacedLocked keeps p.unplaced in step with the view: it starts a
// read of the reason for instances newly found unplaced and forgets those
// placed or gone.
func (m *Manager) trackUnplacedLocked(p *pool) {
	now := map[string]*instance{}
	for _, in := range p.view.all {
		if in.unplaced {
			now[in.jobID] = in
		}
	}
	for id := range p.unplaced {
		if now[id] == nil {
			delete(p.unplaced, id)
		}
	}
	for id, in := range now {
		// Read again when the scheduler tried again (the summary changed).
		if u, known := p.unplaced[id]; (known && u.index == in.summaryIndex) || m.ctx == nil {
			continue
		}
		p.unplaced[id] = unplaced{hash: in.hash, index: in.summaryIndex}
		m.goFnLocked(func() { m.explainUnplaced(p, in) })
	}
}

// failureWatchLoop reads the jobspec of every failing pool again, so a
// fixed template is registered and tried within seconds.
func (m *Manager) failureWatchLoop() {
	for sleepCtx(m.ctx, m.failureWatch) {
		for _, name := range m.names {
			p := m.pools[name]
			m.mu.Lock()
			failing, src := p.failures > 0 || len(p.unplaced) > 0, [sha256.Size]byte{}
			if p.tmpl != nil {
				src = p.tmpl.source
			}
			for _, in := range p.view.all {
				if u, ok := p.unplaced[in.jobID]; ok && u.waiting {
					u.waiting = false
					p.unplaced[in.jobID] = u
					m.goFnLocked(func() { m.explainUnplaced(p, in) })
				}
			}
			m.mu.Unlock()
			if !failing {
				continue
			}
			if data, err := os.ReadFile(p.cfg.Jobspec); err != nil || sha256.Sum256(data) == src {
				continue
			}
			ctx, cancel := context.WithTimeout(m.ctx, reconcileTimeout)
			_ = m.ensureTemplate(ctx, p, false) // logs and records its error
			cancel()
		}
	}
}
