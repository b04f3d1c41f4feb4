package pool

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/nomad/api"
)

// Owner is who holds a claim: the allocation and task that run in the
// claimed sandbox. Empty fields are allowed (library use). An owner with
// AllocID and TaskName holds one claim at a time: a newer claim of the same
// pair supersedes the older ones, which are freed (see supersede.go).
type Owner struct {
	AllocID   string
	TaskName  string
	TaskID    string
	JobID     string
	Namespace string
}

// Claim is a warm allocation handed out to an owner.
type Claim struct {
	Pool      string
	AllocID   string // the warm (sandbox) allocation
	JobID     string // the dispatched child job that owns AllocID
	TaskName  string // the warm task inside AllocID
	NodeID    string
	Owner     Owner
	Hit       bool          // a warm allocation was there at once
	Waited    time.Duration // from the Claim call to the claim
	ClaimedAt time.Time

	rec *pendingRecord // the record being written behind (record.go); nil when written
}

// errLost means the candidate cannot be had (claimed by someone else, or
// gone); the caller moves on to the next one.
var errLost = errors.New("candidate lost")

// errGone marks a claimed allocation found dead or missing.
var errGone = errors.New("allocation gone")

// Claim hands out a warm allocation of pool to owner. Without a warm one it
// dispatches one at once (within the pool's max) and waits for it until ctx
// ends; a ctx without deadline waits the pool's ClaimTimeout.
func (m *Manager) Claim(ctx context.Context, pool string, owner Owner) (*Claim, error) {
	return m.claim(ctx, pool, owner, "")
}

// claim is Claim, taking the warm allocation want first when it is a
// candidate (see ClaimAlloc).
func (m *Manager) claim(ctx context.Context, pool string, owner Owner, want string) (*Claim, error) {
	mctx, err := m.running()
	if err != nil {
		return nil, fmt.Errorf("claim warm allocation in pool %q: %w", pool, err)
	}
	p, err := m.lookup(pool)
	if err != nil {
		return nil, fmt.Errorf("claim warm allocation: %w", err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, p.cfg.ClaimTimeout)
		defer cancel()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(mctx, cancel)
	defer stop()

	start := time.Now()
	m.mu.Lock()
	p.demand.claimed(m.now())
	m.mu.Unlock()
	m.releaseSuperseded(owner, "", start)
	// waiting counts this call in p.waiters (the replenisher dispatches
	// for it) while it has no candidate in hand; missed remembers it ever
	// had to wait.
	waiting, missed := false, false
	defer func() {
		if waiting {
			m.mu.Lock()
			p.waiters--
			m.mu.Unlock()
			m.kickReplenish()
		}
	}()
	for {
		m.mu.Lock()
		if p.tmpl == nil && p.err != nil {
			err := p.err
			m.mu.Unlock()
			return nil, fmt.Errorf("claim warm allocation in pool %q: pool is not usable: %w", pool, err)
		}
		cand := m.takeCandidateLocked(p, want)
		if cand != nil && waiting {
			waiting = false
			p.waiters--
		}
		if why := p.failing(); cand == nil && why != "" {
			// No warm allocation will come from this template: say why
			// now rather than at the timeout.
			m.mu.Unlock()
			return nil, fmt.Errorf("claim warm allocation in pool %q: %w: %s", pool, ErrFailing, why)
		}
		changed := m.changed
		m.mu.Unlock()

		if cand == nil {
			// With no candidate and the Nomad API not answering, no warm
			// allocation can come: say so now rather than at the timeout.
			if err := m.Health(); err != nil {
				return nil, fmt.Errorf("claim warm allocation in pool %q: no warm allocation, and the nomad api is not answering: %w", pool, err)
			}
		} else {
			c, err := m.claimCandidate(ctx, p, cand, owner, start, missed)
			if errors.Is(err, errLost) {
				continue // the next candidate
			}
			if c != nil || err != nil {
				return c, err
			}
			// ctx ended during the attempt: the wait below says so.
		}
		if !waiting && ctx.Err() == nil {
			waiting, missed = true, true
			m.mu.Lock()
			p.waiters++
			m.mu.Unlock()
			m.kickReplenish()
			m.log.Debug("no warm allocation; waiting for one", "pool", pool, "owner_alloc_id", owner.AllocID)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, m.timeoutErr(p, time.Since(start), ctx, mctx)
		}
	}
}

// claimCandidate claims cand for owner: handed out at once and written
// behind when the Manager may, else written now (tryClaim). It returns the
// claim; an error wrapping errLost when cand cannot be had and the next
// candidate is to be tried; another error when the Claim fails; and neither
// when ctx ended during the attempt. missed says the Claim had to wait.
func (m *Manager) claimCandidate(ctx context.Context, p *pool, cand *instance, owner Owner, start time.Time, missed bool) (*Claim, error) {
	var c *Claim
	var err error
	if m.writeBehind {
		c = m.reserve(p, cand, owner)
	}
	if c == nil {
		c, err = m.tryClaim(ctx, p, cand, owner, reasonClaim)
	}
	switch {
	case errors.Is(err, errLost):
		return nil, err
	case err != nil && ctx.Err() != nil:
		return nil, nil
	case err != nil:
		err = fmt.Errorf("claim warm allocation in pool %q: %w", p.cfg.Name, err)
		m.log.Error("claim failed", "pool", p.cfg.Name, "alloc_id", cand.allocID, "error", err)
		return nil, err
	}
	c.Hit, c.Waited = !missed, time.Since(start)
	m.mu.Lock()
	p.quietAfterClaim(time.Now())
	m.mu.Unlock()
	m.kickReplenish()
	m.releaseSuperseded(owner, c.AllocID, c.ClaimedAt)
	m.log.Info("claimed warm allocation", "pool", p.cfg.Name, "alloc_id", c.AllocID, "job_id", c.JobID,
		"owner_alloc_id", owner.AllocID, "owner_task", owner.TaskName, "hit", c.Hit, "waited", c.Waited.String())
	return c, nil
}

// timeoutErr says what a Claim waited for when its context ended.
func (m *Manager) timeoutErr(p *pool, waited time.Duration, ctx, mctx context.Context) error {
	if mctx.Err() != nil {
		return fmt.Errorf("claim warm allocation in pool %q: %w", p.cfg.Name, ErrStopped)
	}
	m.mu.Lock()
	s, last := p.stats(), p.lastErr
	m.mu.Unlock()
	why := ""
	if last != nil {
		why = fmt.Sprintf("; last problem: %v", last)
	}
	err := fmt.Errorf("claim warm allocation in pool %q: no warm allocation after waiting %s (warm %d, preparing %d, starting %d, claimed %d, max %d%s): %w",
		p.cfg.Name, waited.Round(time.Millisecond), s.Warm, s.Preparing, s.Starting, s.Claimed, s.Max, why, context.Cause(ctx))
	m.log.Warn("claim timed out", "pool", p.cfg.Name, "waited", waited.String(), "warm", s.Warm, "preparing", s.Preparing, "starting", s.Starting, "claimed", s.Claimed, "max", s.Max)
	return err
}

// takeCandidateLocked reserves the warm candidate want of p if it is one,
// else the oldest, or returns nil.
func (m *Manager) takeCandidateLocked(p *pool, want string) *instance {
	if in := takeWanted(p, want); in != nil && !m.inv.reserved[in.allocID] {
		m.inv.reserved[in.allocID] = true
		return in
	}
	for len(p.view.candidates) > 0 {
		in := p.view.candidates[0]
		p.view.candidates = p.view.candidates[1:]
		if !m.inv.reserved[in.allocID] {
			m.inv.reserved[in.allocID] = true
			return in
		}
	}
	return nil
}

// tryClaim makes the claim of one candidate: create its claim record with
// check-and-set index 0, then confirm the allocation still runs. It returns
// errLost (wrapped) when the candidate is taken or gone.
func (m *Manager) tryClaim(ctx context.Context, p *pool, in *instance, owner Owner, reason string) (*Claim, error) {
	c := &Claim{
		Pool: p.cfg.Name, AllocID: in.allocID, JobID: in.jobID, TaskName: in.task,
		NodeID: m.nodeID, Owner: owner, ClaimedAt: time.Now().UTC(),
	}
	items := c.items(newNonce(), reason)
	path := ClaimPath(p.cfg.Name, in.allocID)

	created, err := m.createClaim(ctx, path, items, sameNonce(items))
	m.mu.Lock()
	delete(m.inv.reserved, in.allocID)
	switch {
	case err == nil:
		m.inv.addedClaims[in.allocID] = claimRef{pool: p.cfg.Name, path: path, index: created.ModifyIndex}
		m.claimCache[path] = &claimRecord{claim: c, reason: reason}
	case errors.Is(err, errLost):
		// Claimed elsewhere: keep it out of our candidates until the claim
		// list shows the other record.
		m.inv.addedClaims[in.allocID] = claimRef{pool: p.cfg.Name, path: path, index: m.inv.claimsIndex + 1}
	}
	// The allocation watch kept running during the write: if the
	// allocation died meanwhile, the inventory knows by now. Only when
	// that watch is failing is the allocation read back from Nomad.
	running := m.allocRunningLocked(in)
	watching := m.watchErr["allocations"] == nil
	m.rebuildLocked()
	m.mu.Unlock()
	if err != nil {
		return nil, err
	}
	var gone error
	switch {
	case !running:
		gone = fmt.Errorf("%w: allocation %s stopped running", errGone, in.allocID)
	case !watching:
		gone = m.confirmAlloc(ctx, in)
	}
	if gone != nil && !errors.Is(gone, errGone) {
		// Cannot vouch for it: give the claim back and report.
		m.goFn(func() {
			ctx, cancel := context.WithTimeout(m.ctx, cleanupTimeout)
			defer cancel()
			if err := m.deleteClaim(ctx, p.cfg.Name, in.allocID); err != nil {
				m.log.Error("cannot give back unconfirmed claim; reconcile will retry", "pool", p.cfg.Name, "alloc_id", in.allocID, "error", err)
			}
		})
		return nil, gone
	}
	if gone != nil {
		// Ours, but useless: clean it up in the background and move on.
		m.log.Warn("claimed allocation is gone; purging it and trying the next", "pool", p.cfg.Name, "alloc_id", in.allocID, "job_id", in.jobID, "reason", gone)
		m.mu.Lock()
		m.markPurgedLocked(in.jobID)
		m.mu.Unlock()
		m.goFn(func() { m.cleanup(p.cfg.Name, in.jobID, in.allocID) })
		return nil, fmt.Errorf("%w: %w", errLost, gone)
	}
	return c, nil
}

// allocRunningLocked reports whether the inventory still has in's
// allocation running its warm task.
func (m *Manager) allocRunningLocked(in *instance) bool {
	for _, a := range m.inv.allocs[in.jobID] {
		if a.ID == in.allocID {
			return a.DesiredStatus == api.AllocDesiredStatusRun && a.ClientStatus == api.AllocClientStatusRunning && taskRunning(a, in.task)
		}
	}
	return false
}

// confirmAlloc checks with Nomad that a warm allocation still runs its warm
// task on this node, for when the inventory cannot vouch for it. It reads
// the allocation's list stub by ID prefix, a lookup that does not grow with
// the cluster and, unlike the full allocation, does not carry the job.
func (m *Manager) confirmAlloc(ctx context.Context, in *instance) error {
	var stubs []*api.AllocationListStub
	err := call(ctx, retryAttempts, func(ctx context.Context) error {
		q := m.queryOpts(ctx, m.namespace)
		q.Prefix = in.allocID
		var err error
		stubs, _, err = m.client.Allocations().List(q)
		return err
	})
	if err != nil {
		return fmt.Errorf("read allocation %s: %w", in.allocID, err)
	}
	var a *api.AllocationListStub
	for _, s := range stubs {
		if s.ID == in.allocID {
			a = s
		}
	}
	switch {
	case a == nil:
		return fmt.Errorf("%w: allocation %s no longer exists", errGone, in.allocID)
	case a.NodeID != m.nodeID:
		return fmt.Errorf("%w: allocation %s runs on node %s, not this node", errGone, in.allocID, a.NodeID)
	case a.DesiredStatus != api.AllocDesiredStatusRun || a.ClientStatus != api.AllocClientStatusRunning:
		return fmt.Errorf("%w: allocation %s is %s (desired %s)", errGone, in.allocID, a.ClientStatus, a.DesiredStatus)
	case !taskRunning(a, in.task):
		return fmt.Errorf("%w: task %q of allocation %s is not running", errGone, in.task, in.allocID)
	}
	return nil
}
