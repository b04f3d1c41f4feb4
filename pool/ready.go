package pool

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-pool/internal/untrusted"
)

// Readiness: a template may say how to tell that what it prepares (a cloned
// repository, installed packages, a server listening) is done, and only then
// is an allocation warm. Two forms, both the template's:
//   - the Nomad-native service checks (provider "nomad") its group and task
//     declare: ready once each has a passing result on the client
//     (/v1/client/allocation/<id>/checks);
//   - a ready command, the task's meta agentkernel_pool_ready, which
//     Options.CheckReady runs in the sandbox (the driver: through its launch
//     session, with sh -c, as the task's user, in its task dir): ready once it
//     exits 0.
//
// Both are asked every agentkernel_pool_ready_interval (task meta, default
// 1s) from when Prepare succeeded, and asked again while the allocation waits
// for a claim (readySpec.recheck). An allocation that is running and prepared
// but not ready counts as preparing (Stats.Preparing), not warm: no claim
// gets it. One not ready within the pool's ReadyTimeout of its task's start,
// or found not ready after it was (a check that turned critical), is retired
// and counts as a failure of the template (failure.go), with the last
// check's output, quoted, in the pool's error and the log. A pool whose
// template has neither form makes no call and takes no time for readiness.

const (
	// DefaultReadyTimeout is Config.ReadyTimeout when unset: generous, for
	// image pulls and big clones.
	DefaultReadyTimeout = 10 * time.Minute
	// DefaultReadyInterval is how often readiness is asked without
	// agentkernel_pool_ready_interval.
	DefaultReadyInterval = time.Second

	metaReady         = "agentkernel_pool_ready"
	metaReadyInterval = "agentkernel_pool_ready_interval"

	minReadyInterval = 100 * time.Millisecond
	maxReadyInterval = time.Hour
	// readyAttemptTimeout bounds one check: the ready command's run (a
	// command still running then is a failed check, and is waited for
	// rather than started again) or the read of the service checks.
	readyAttemptTimeout = 30 * time.Second
	// readyParallel bounds the checks in flight.
	readyParallel = 8
)

// ReadyResult is how one run of a template's ready command ended: its exit
// code and the end of its output (the sandbox's: the pool quotes it).
type ReadyResult struct {
	Code   int
	Output []byte
}

// readySpec is a template's readiness check; nil when it has none.
type readySpec struct {
	command  string
	interval time.Duration
	checks   []string // the Nomad service checks to pass, as "service/check"
	// recheck is how often a ready allocation is asked again while it
	// waits for a claim: interval with a ready command (asked through the
	// launch session, no API call); with service checks alone, no more
	// often than the most frequent of them runs on the client, since their
	// results cannot change faster (one API call per look).
	recheck time.Duration
}

// parseReady reads the readiness check of a template's group and task.
func parseReady(tg *api.TaskGroup, task *api.Task) (*readySpec, error) {
	spec := &readySpec{command: strings.TrimSpace(task.Meta[metaReady]), interval: DefaultReadyInterval}
	if v, ok := task.Meta[metaReadyInterval]; ok {
		d, err := time.ParseDuration(strings.TrimSpace(v))
		switch {
		case err != nil:
			return nil, fmt.Errorf("meta %s: %q: want a duration such as \"1s\" or \"500ms\"", metaReadyInterval, v)
		case d < minReadyInterval || d > maxReadyInterval:
			return nil, fmt.Errorf("meta %s: %s: want %s to %s", metaReadyInterval, d, minReadyInterval, maxReadyInterval)
		}
		spec.interval = d
	}
	if _, ok := task.Meta[metaReady]; ok && spec.command == "" {
		return nil, fmt.Errorf("meta %s: empty; give a shell command that exits 0 once the sandbox is ready, or leave the key out", metaReady)
	}
	for _, svcs := range [][]*api.Service{tg.Services, task.Services} {
		for _, s := range svcs {
			if s == nil || s.Provider != "nomad" {
				continue
			}
			for i, c := range s.Checks {
				name := c.Name
				if name == "" {
					name = fmt.Sprintf("check %d", i+1)
				}
				spec.checks = append(spec.checks, s.Name+"/"+name)
				if spec.recheck == 0 || (c.Interval > 0 && c.Interval < spec.recheck) {
					spec.recheck = c.Interval
				}
			}
		}
	}
	if spec.command == "" && len(spec.checks) == 0 {
		return nil, nil
	}
	if spec.command != "" || spec.recheck < spec.interval {
		spec.recheck = spec.interval
	}
	return spec, nil
}

// readyState is one running allocation's readiness, while it is unclaimed.
type readyState struct {
	began    time.Time // its warm task's start: ReadyTimeout counts from it
	ready    bool      // the last check passed
	checking bool      // a check is in flight
	next     time.Time // when the next check is due
	why      string    // why the last check did not pass (quoted)
	answered bool      // a check has ended since tracking began
}

// trackReadinessLocked starts tracking the readiness of the allocations
// buildViews found running a template with a readiness check, and forgets
// the rest: claimed or gone, readiness is a warm allocation's.
func (m *Manager) trackReadinessLocked(tracked map[string]*instance) {
	for id, in := range tracked {
		if m.inv.readiness[id] == nil {
			m.inv.readiness[id] = &readyState{began: m.taskStartLocked(in)}
		}
	}
	for id := range m.inv.readiness {
		if tracked[id] == nil {
			delete(m.inv.readiness, id)
		}
	}
}

// taskStartLocked is when in's warm task started, as its client reported it,
// else now.
func (m *Manager) taskStartLocked(in *instance) time.Time {
	for _, a := range m.inv.allocs[in.jobID] {
		if ts := a.TaskStates[in.task]; a.ID == in.allocID && ts != nil && !ts.StartedAt.IsZero() {
			return ts.StartedAt
		}
	}
	return time.Now()
}

// readyTimeout is p's ReadyTimeout or its default.
func (p *pool) readyTimeout() time.Duration {
	if p.cfg.ReadyTimeout > 0 {
		return p.cfg.ReadyTimeout
	}
	return DefaultReadyTimeout
}

// readyJob is one check to run.
type readyJob struct {
	p    *pool
	in   *instance
	spec *readySpec
	st   *readyState
}

// readyLoop runs the checks that are due and retires what is not ready in
// time, as the inventory changes and as checks come due.
func (m *Manager) readyLoop() {
	sem := make(chan struct{}, readyParallel)
	for {
		m.mu.Lock()
		changed := m.changed
		todo, late, next := m.readyDueLocked(time.Now())
		m.mu.Unlock()
		for _, in := range late {
			m.log.Error("warm allocation not ready in time; replacing it", "pool", in.pool, "alloc_id", in.allocID, "error", m.lastErrOf(in.pool))
			m.goFn(func() { m.runRemoval(in, "not ready in time", m.pools[in.pool]) })
		}
		if !runEach(m, sem, todo, m.checkReady) || !m.sleep(next, changed, m.readyKick) {
			return
		}
	}
}

// readyDueLocked marks the checks due at now as in flight and the
// allocations past their ReadyTimeout as failed and being removed; next is
// when the next check or timeout is due (zero: none).
func (m *Manager) readyDueLocked(now time.Time) (todo []readyJob, late []*instance, next time.Time) {
	for _, name := range m.names {
		p := m.pools[name]
		if p.tmpl == nil || p.tmpl.ready == nil {
			continue
		}
		for _, in := range p.view.all {
			st := m.inv.readiness[in.allocID]
			if st == nil || !(in.preparing || in.state == stateWarm) || m.inv.busy[in.jobID] || m.inv.reserved[in.allocID] {
				continue
			}
			// Past its ReadyTimeout, and asked at least once: a sandbox a
			// restarted plugin adopts started long ago, and may be ready.
			if in.preparing {
				deadline := st.began.Add(p.readyTimeout())
				if !now.Before(deadline) && st.answered {
					why := cmp.Or(st.why, "no check has answered")
					err := fmt.Errorf("warm allocation %s of pool %q not ready within ready_timeout %s of its task's start: %s", in.allocID, in.pool, p.readyTimeout(), why)
					p.noteFailure(now, err, err.Error())
					p.readyFail++
					p.readyErr = err.Error()
					m.inv.busy[in.jobID] = true
					late = append(late, in)
					continue
				}
				if now.Before(deadline) { // else the check in flight wakes the loop
					next = earliest(next, deadline)
				}
			}
			if st.checking {
				continue
			}
			if now.Before(st.next) {
				next = earliest(next, st.next)
				continue
			}
			st.checking = true
			todo = append(todo, readyJob{p: p, in: in, spec: p.tmpl.ready, st: st})
		}
	}
	if len(late) > 0 {
		m.rebuildLocked()
	}
	return todo, late, next
}

// checkReady runs one check and records its verdict.
func (m *Manager) checkReady(j readyJob) {
	ctx, cancel := context.WithTimeout(m.ctx, readyAttemptTimeout)
	why, err := m.readyVerdict(ctx, j.in, j.spec)
	cancel()
	if m.ctx.Err() != nil {
		return
	}
	now := time.Now()
	p, in, st := j.p, j.in, j.st
	m.mu.Lock()
	st.checking, st.answered = false, true
	st.next = now.Add(j.spec.interval)
	if m.inv.readiness[in.allocID] != st || m.inv.busy[in.jobID] || m.inv.reserved[in.allocID] {
		// Claimed, gone or being removed meanwhile: the verdict is moot.
		m.mu.Unlock()
		m.kickReady()
		return
	}
	var stale error
	switch {
	case err != nil: // no verdict: asked again at the interval
		p.lastErr = fmt.Errorf("check readiness of warm allocation %s of pool %q: %w", in.allocID, in.pool, err)
	case why == "" && !st.ready:
		st.ready, st.why = true, ""
		if m.observer != nil {
			m.observer.Ready(in.pool, now.Sub(st.began))
		}
		m.rebuildLocked()
	case why == "":
	case st.ready:
		st.ready, st.why = false, why
		stale = fmt.Errorf("warm allocation %s of pool %q is no longer ready: %s", in.allocID, in.pool, why)
		p.noteFailure(now, stale, stale.Error())
		p.readyFail++
		p.readyErr = stale.Error()
		m.inv.busy[in.jobID] = true
		m.rebuildLocked()
	default:
		st.why = why
		p.lastErr = fmt.Errorf("warm allocation %s of pool %q not ready after %s: %s", in.allocID, in.pool, now.Sub(st.began).Round(time.Millisecond), why)
	}
	if st.ready {
		st.next = now.Add(j.spec.recheck)
	}
	m.mu.Unlock()
	switch {
	case stale != nil:
		m.log.Error("warm allocation no longer ready; replacing it", "pool", in.pool, "alloc_id", in.allocID, "error", stale)
		m.goFn(func() { m.runRemoval(in, "no longer ready", p) })
	case err != nil:
		m.log.Warn("cannot check readiness; will try again", "pool", in.pool, "alloc_id", in.allocID, "error", err)
	case why != "":
		m.log.Debug("warm allocation not ready yet", "pool", in.pool, "alloc_id", in.allocID, "why", why)
	}
	m.kickReady()
}

// kickReady wakes readyLoop to schedule the next check.
func (m *Manager) kickReady() {
	select {
	case m.readyKick <- struct{}{}:
	default:
	}
}

// readyVerdict runs the checks of spec once: why is "" when they pass, else
// says why not (quoted). err means no verdict (the way there failed).
func (m *Manager) readyVerdict(ctx context.Context, in *instance, spec *readySpec) (why string, err error) {
	if spec.command != "" {
		res, err := m.checkReadyFn(ctx, WarmAlloc{Pool: in.pool, AllocID: in.allocID, JobID: in.jobID, TaskName: in.task, ReadyCommand: spec.command})
		switch {
		case err != nil && errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil:
			return fmt.Sprintf("ready command did not finish within %s", readyAttemptTimeout), nil
		case err != nil:
			return "", err
		case res.Code != 0:
			return fmt.Sprintf("ready command exited %d: %s", res.Code, outputText(res.Output)), nil
		}
	}
	if len(spec.checks) > 0 {
		return m.serviceChecks(ctx, in.allocID, spec.checks)
	}
	return "", nil
}

// serviceChecks reads the client's results of an allocation's Nomad service
// checks: why is "" once each of want has passed.
func (m *Manager) serviceChecks(ctx context.Context, allocID string, want []string) (why string, err error) {
	res, err := m.client.Allocations().Checks(allocID, m.queryOpts(ctx, m.namespace))
	if err != nil {
		return "", fmt.Errorf("read service checks of allocation %s: %w", allocID, denied(err, "read-job in namespace "+m.namespace))
	}
	passed := 0
	for _, id := range slices.Sorted(maps.Keys(res)) {
		c := res[id]
		if c.Status == "success" {
			passed++
			continue
		}
		return fmt.Sprintf("service check %s of service %s: %s: %s", untrusted.Name(c.Check), untrusted.Name(c.Service), untrusted.Name(c.Status), outputText([]byte(c.Output))), nil
	}
	if passed < len(want) {
		return fmt.Sprintf("%d of %d service checks (%s) have passed", passed, len(want), strings.Join(want, ", ")), nil
	}
	return "", nil
}

// outputText quotes a check's output for errors and logs.
func outputText(out []byte) string {
	s := strings.TrimSpace(string(out))
	if s == "" {
		return "no output"
	}
	return untrusted.Text(s)
}

// lastErrOf is a pool's last problem, for logs.
func (m *Manager) lastErrOf(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if p := m.pools[name]; p != nil {
		return p.lastErr
	}
	return nil
}
