package pool

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/agentkernel/agentkernel-pool/internal/nomadapi"
)

// Preparation: a user of the pool (the driver) may need to do something with
// each warm allocation before it can be handed out quickly, such as opening
// the launch path into the sandbox. With Options.Prepare set, an allocation
// whose task runs counts as starting until Prepare has succeeded for it in
// this Manager; only then is it warm and a claim candidate. A Prepare that
// fails because of the allocation (its error wraps ErrUnpreparable) retires
// it and counts as a failure of the pool's template (the next dispatch backs
// off). Any other failure (the Nomad API unreachable) is tried again, backing
// off per allocation, and retires nothing.

// ErrUnpreparable marks a Prepare error as the allocation's own fault.
var ErrUnpreparable = errors.New("allocation cannot be prepared")

// ErrInUse marks a Prepare error for an allocation its caller already uses
// (the caller's own mark is in it, such as a started run) while no claim
// record shows: a claim handed out by an earlier process that ended before
// the record was written behind it (record.go). Such an allocation is never
// handed out; its claimer's Adopt brings the record, and one no claimer
// adopts within inUseGrace is retired (not a failure of the template).
var ErrInUse = errors.New("allocation already in use")

// inUseGrace is how long an allocation in use waits for its claimer's record.
const inUseGrace = time.Minute

const (
	// prepareTimeout bounds one Prepare call.
	prepareTimeout = 30 * time.Second
	// prepareParallel bounds concurrent Prepare calls.
	prepareParallel = 4
	// prepareRetryBase and prepareRetryMax bound the backoff of an
	// allocation whose Prepare failed for a reason not its own.
	prepareRetryBase = 500 * time.Millisecond
	prepareRetryMax  = 30 * time.Second
)

// prepRetry is an allocation's Prepare backoff.
type prepRetry struct {
	fails int
	at    time.Time
	inUse time.Time // when Prepare first found it in use (ErrInUse)
}

// prepareLoop prepares every allocation that is ready but not prepared, as
// the inventory changes.
func (m *Manager) prepareLoop() {
	sem := make(chan struct{}, prepareParallel)
	for {
		m.mu.Lock()
		changed := m.changed
		now := time.Now()
		var next time.Time // the earliest backoff to end
		var todo []*instance
		for _, name := range m.names {
			for _, in := range m.pools[name].view.all {
				if !in.unprepared || m.inv.preparing[in.allocID] || m.inv.busy[in.jobID] {
					continue
				}
				if r, ok := m.inv.prepRetry[in.allocID]; ok && now.Before(r.at) {
					if next.IsZero() || r.at.Before(next) {
						next = r.at
					}
					continue
				}
				m.inv.preparing[in.allocID] = true
				todo = append(todo, in)
			}
		}
		m.mu.Unlock()
		if !runEach(m, sem, todo, m.prepareOne) || !m.sleep(next, changed, nil) {
			return
		}
	}
}

// prepareOne runs Prepare for one allocation and records the outcome.
func (m *Manager) prepareOne(in *instance) {
	ctx, cancel := context.WithTimeout(m.ctx, prepareTimeout)
	began := time.Now()
	w := WarmAlloc{Pool: in.pool, AllocID: in.allocID, JobID: in.jobID, TaskName: in.task}
	m.mu.Lock()
	if p := m.pools[in.pool]; p != nil && p.tmpl != nil && p.tmpl.ready != nil && p.tmpl.hash == in.hash {
		w.ReadyCommand = p.tmpl.ready.command
	}
	m.mu.Unlock()
	err := m.prepare(ctx, w)
	cancel()
	if m.ctx.Err() != nil {
		return
	}
	m.mu.Lock()
	delete(m.inv.preparing, in.allocID)
	p := m.pools[in.pool]
	retire, why := false, "preparing it failed"
	switch {
	case errors.Is(err, ErrInUse):
		r := m.inv.prepRetry[in.allocID]
		now := time.Now()
		if r.inUse.IsZero() {
			r.inUse = now
		}
		if now.Sub(r.inUse) >= m.inUseGrace {
			m.inv.busy[in.jobID] = true
			delete(m.inv.prepRetry, in.allocID)
			retire, why = true, fmt.Sprintf("in use without a claim record for %s", m.inUseGrace)
			break
		}
		r.at = now.Add(backoff(r.fails, prepareRetryBase, prepareRetryMax))
		r.fails++
		m.inv.prepRetry[in.allocID] = r
	case err == nil:
		m.inv.prepared[in.allocID] = true
		delete(m.inv.prepRetry, in.allocID)
		if p != nil {
			p.denied = ""
		}
	case errors.Is(err, ErrUnpreparable) && p != nil:
		err = fmt.Errorf("prepare warm allocation %s of pool %q: %w", in.allocID, in.pool, err)
		p.noteFailure(time.Now(), err, err.Error())
		p.prepFail++
		m.inv.busy[in.jobID] = true
		delete(m.inv.prepRetry, in.allocID)
		retire = true
	default:
		r := m.inv.prepRetry[in.allocID]
		r.at = time.Now().Add(backoff(r.fails, prepareRetryBase, prepareRetryMax))
		r.fails++
		m.inv.prepRetry[in.allocID] = r
		if p != nil {
			p.lastErr = fmt.Errorf("prepare warm allocation %s of pool %q: %w", in.allocID, in.pool, err)
			if permissionDenied(err) {
				// Not the allocation's fault: it is kept and tried again,
				// and the pool says what the token lacks.
				p.denied = m.execNeedLocked(p)
			}
		}
	}
	m.rebuildLocked()
	m.mu.Unlock()
	switch {
	case retire && errors.Is(err, ErrInUse):
		m.log.Warn("allocation in use and no claimer adopted it; retiring it", "pool", in.pool, "alloc_id", in.allocID, "error", err)
		m.goFn(func() { m.runRemoval(in, why, p) })
	case retire:
		m.log.Error("preparing a warm allocation failed; replacing it", "pool", in.pool, "alloc_id", in.allocID, "error", err)
		m.goFn(func() { m.runRemoval(in, why, p) })
	case errors.Is(err, ErrInUse):
		m.log.Warn("allocation in use without a claim record; waiting for its claimer to adopt it", "pool", in.pool, "alloc_id", in.allocID, "error", err)
	case err != nil:
		m.log.Warn("preparing a warm allocation failed; will try again", "pool", in.pool, "alloc_id", in.allocID, "error", err)
	default:
		m.log.Debug("prepared warm allocation", "pool", in.pool, "alloc_id", in.allocID, "took", time.Since(began))
	}
}

// Unprepare takes a warm allocation back to starting, so Prepare runs for it
// again: its preparation was lost (the driver's launch path into it closed).
// A claimed or unknown allocation is left alone.
func (m *Manager) Unprepare(allocID string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.inv.prepared[allocID] {
		return
	}
	delete(m.inv.prepared, allocID)
	m.rebuildLocked()
}

// permissionDenied reports whether err is Nomad refusing the plugin's token:
// a 403, or the exec stream closed with Nomad's "Permission denied".
func permissionDenied(err error) bool {
	return nomadapi.StatusCode(err) == http.StatusForbidden || strings.Contains(strings.ToLower(err.Error()), "permission denied")
}

// execNeedLocked says which right the token needs to exec into p's warm
// allocations. Nomad asks for alloc-node-exec on drivers that run a task
// without filesystem isolation (raw_exec), alloc-exec on the others.
func (m *Manager) execNeedLocked(p *pool) string {
	drv, need := "", "alloc-exec"
	if p.tmpl != nil && len(p.tmpl.job.TaskGroups) == 1 && len(p.tmpl.job.TaskGroups[0].Tasks) == 1 {
		drv = p.tmpl.job.TaskGroups[0].Tasks[0].Driver
	}
	if drv == "raw_exec" {
		need = "alloc-node-exec"
	}
	if drv == "" {
		drv = "its driver"
	}
	return fmt.Sprintf("permission denied: the plugin's ACL token cannot exec into the warm allocations; a template on %s needs %s in namespace %q (see example/acl.hcl)", drv, need, m.namespace)
}

// runEach runs fn for each item in the Manager's goroutines, at most
// cap(sem) at once; false when the Manager stops first.
func runEach[T any](m *Manager, sem chan struct{}, items []T, fn func(T)) bool {
	for _, it := range items {
		select {
		case sem <- struct{}{}:
		case <-m.ctx.Done():
			return false
		}
		m.goFn(func() {
			defer func() { <-sem }()
			fn(it)
		})
	}
	return true
}

// sleep waits until next (never, when zero) or until changed or kick fires
// (a nil kick never does); false when the Manager stops first.
func (m *Manager) sleep(next time.Time, changed, kick <-chan struct{}) bool {
	wake := time.NewTimer(time.Until(next))
	defer wake.Stop()
	if next.IsZero() {
		wake.Stop()
	}
	select {
	case <-m.ctx.Done():
		return false
	case <-changed:
	case <-kick:
	case <-wake.C:
	}
	return true
}
