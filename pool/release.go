package pool

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/nomad/api"
)

// cleanupTimeout bounds background cleanups (a claim that found its
// allocation gone, a retirement); reconcile retries what they leave.
const cleanupTimeout = time.Minute

// Release purges the claimed allocation's dispatched job and deletes its
// claim record. A sandbox is never returned to the pool. Release is
// idempotent: releasing a released claim succeeds. A claim whose record is
// being written behind it is released once the write ended; one that lost
// its allocation to another claimer's record leaves it alone.
func (m *Manager) Release(ctx context.Context, c *Claim) error {
	if c == nil || c.JobID == "" || c.AllocID == "" || c.Pool == "" {
		return errors.New("release warm allocation: claim without pool, job or allocation")
	}
	if err := c.Wait(ctx); errors.Is(err, ErrClaimLost) {
		m.log.Warn("not releasing an allocation another claimer holds", "pool", c.Pool, "alloc_id", c.AllocID, "error", err)
		return nil
	} else if ctx.Err() != nil {
		return fmt.Errorf("release allocation %s of pool %q: %w", c.AllocID, c.Pool, err)
	}
	if err := m.remove(ctx, c.Pool, c.JobID, c.AllocID, true); err != nil {
		err = fmt.Errorf("release allocation %s of pool %q: %w", c.AllocID, c.Pool, err)
		m.log.Error("release failed", "pool", c.Pool, "alloc_id", c.AllocID, "job_id", c.JobID, "error", err)
		return err
	}
	m.log.Info("released claimed allocation", "pool", c.Pool, "alloc_id", c.AllocID, "job_id", c.JobID, "owner_alloc_id", c.Owner.AllocID)
	m.kickReplenish()
	return nil
}

// remove purges a dispatched child job and then, when claimed, deletes the
// claim record of allocID. The order matters: with the claim gone first, a
// still-running allocation could look warm to another claimer.
func (m *Manager) remove(ctx context.Context, pool, jobID, allocID string, claimed bool) error {
	if err := m.purgeJob(ctx, jobID); err != nil {
		return err
	}
	if !claimed {
		return nil
	}
	return m.deleteClaim(ctx, pool, allocID)
}

// purgeJob deregisters and purges a job; a job that is already gone is fine.
func (m *Manager) purgeJob(ctx context.Context, jobID string) error {
	m.mu.Lock()
	m.markPurgedLocked(jobID)
	m.mu.Unlock()
	var wm *api.WriteMeta
	err := call(ctx, retryAttempts, func(ctx context.Context) error {
		var err error
		_, wm, err = m.client.Jobs().Deregister(jobID, true, m.writeOpts(ctx, m.namespace))
		if isNotFound(err) {
			wm, err = nil, nil
		}
		return err
	})
	if m.observer != nil && ctx.Err() == nil {
		pool, _, _, _ := parseJobID(jobID)
		m.observer.Purged(pool, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case err != nil:
		delete(m.inv.removedJobs, jobID) // still there: count it again
	case wm != nil && wm.LastIndex > 0:
		m.inv.removedJobs[jobID] = wm.LastIndex
	default:
		m.inv.removedJobs[jobID] = m.inv.jobsIndex + 1
	}
	m.rebuildLocked()
	if err != nil {
		return fmt.Errorf("purge job %s: %w", jobID, err)
	}
	return nil
}

// markPurgedLocked takes a job out of the counts now, before the purge is
// answered, so no one picks or counts it meanwhile.
func (m *Manager) markPurgedLocked(jobID string) {
	m.inv.removedJobs[jobID] = pendingIndex
	m.rebuildLocked()
}

// deleteClaim deletes a claim record; one that is already gone is fine.
func (m *Manager) deleteClaim(ctx context.Context, pool, allocID string) error {
	path := ClaimPath(pool, allocID)
	var wm *api.WriteMeta
	err := call(ctx, retryAttempts, func(ctx context.Context) error {
		var err error
		wm, err = m.client.Variables().Delete(path, m.writeOpts(ctx, m.namespace))
		if isNotFound(err) {
			wm, err = nil, nil
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("delete claim record %s: %w", path, err)
	}
	m.mu.Lock()
	idx := m.inv.claimsIndex + 1
	if wm != nil && wm.LastIndex > 0 {
		idx = wm.LastIndex
	}
	m.inv.removedClaims[allocID] = idx
	delete(m.inv.addedClaims, allocID)
	delete(m.claimCache, path)
	m.rebuildLocked()
	m.mu.Unlock()
	return nil
}

// cleanup removes a claimed instance in the background, bounded by the
// Manager's life; a failure is logged and left to reconcile.
func (m *Manager) cleanup(pool, jobID, allocID string) {
	ctx, cancel := context.WithTimeout(m.ctx, cleanupTimeout)
	defer cancel()
	if err := m.remove(ctx, pool, jobID, allocID, true); err != nil {
		m.log.Error("cleanup of claimed allocation failed; reconcile will retry", "pool", pool, "alloc_id", allocID, "job_id", jobID, "error", err)
	}
	m.kickReplenish()
}

// retire removes an unclaimed instance the pool no longer wants (stale
// template, surplus, stuck, removed pool). With an allocation it first takes
// a claim of its own, so an instance someone claims meanwhile is never
// touched; that claim goes with the instance.
func (m *Manager) retire(ctx context.Context, in *instance, why string) error {
	claimed := false
	if in.allocID != "" {
		c := &Claim{Pool: in.pool, AllocID: in.allocID, JobID: in.jobID, TaskName: in.task, NodeID: m.nodeID, ClaimedAt: time.Now().UTC()}
		nonce := fmt.Sprintf("retire-%s-%d", m.instance, time.Now().UnixNano())
		path := ClaimPath(in.pool, in.allocID)
		items := c.items(nonce, reasonRetire)
		v, err := m.createClaim(ctx, path, items, sameNonce(items))
		if errors.Is(err, errLost) {
			m.log.Debug("instance claimed before it could be retired; leaving it", "pool", in.pool, "alloc_id", in.allocID)
			return nil
		}
		if err != nil {
			return fmt.Errorf("retire %s (%s): %w", in.jobID, why, err)
		}
		m.mu.Lock()
		m.inv.addedClaims[in.allocID] = claimRef{pool: in.pool, path: path, index: v.ModifyIndex}
		m.rebuildLocked()
		m.mu.Unlock()
		claimed = true
		if m.discard != nil {
			m.discard(in.allocID) // ours now: no claim can take it
		}
	}
	if err := m.remove(ctx, in.pool, in.jobID, in.allocID, claimed); err != nil {
		return fmt.Errorf("retire %s (%s): %w", in.jobID, why, err)
	}
	m.log.Info("retired warm instance", "pool", in.pool, "job_id", in.jobID, "alloc_id", in.allocID, "state", in.state.String(), "why", why)
	return nil
}
