package pool

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/nomad/api"
)

const (
	defaultReconcileEvery = 30 * time.Second
	reconcileTimeout      = 2 * time.Minute
	templateRetry         = 5 * time.Second
	// retireGrace is how long a retirement claim may live before reconcile
	// treats it as left behind by a crash.
	retireGrace = time.Minute
)

// claimRecord is a cached claim record.
type claimRecord struct {
	claim   *Claim
	reason  string
	foreign bool // another node's: ignored here
}

// reconcileLoop repairs what crashes and operators leave behind, at start
// and then periodically.
func (m *Manager) reconcileLoop() {
	for first := true; ; first = false {
		ctx, cancel := context.WithTimeout(m.ctx, reconcileTimeout)
		if first { // Start has just registered the templates
			m.reconcileClaims(ctx)
			m.reconcileOrphans(ctx)
		} else {
			m.reconcile(ctx)
		}
		cancel()
		if !sleepCtx(m.ctx, m.nextReconcile()) {
			return
		}
	}
}

// nextReconcile is the pause before the next pass: shorter while a pool
// with a valid config still has no registered template (say, the API was
// down at start), so it starts working soon after the API is back.
func (m *Manager) nextReconcile() time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range m.pools {
		if p.tmpl == nil && validateConfig(p.cfg) == nil {
			return min(m.reconcileEvery, templateRetry)
		}
	}
	return m.reconcileEvery
}

// reconcile runs one pass: templates, claims, pools no longer configured.
// Every problem is logged; the next pass retries.
func (m *Manager) reconcile(ctx context.Context) {
	for _, name := range m.names {
		_ = m.ensureTemplate(ctx, m.pools[name], true) // logs and records its error
	}
	m.reconcileClaims(ctx)
	m.reconcileOrphans(ctx)
}

// reconcileClaims deletes claims whose sandbox allocation is gone or dead
// (purging its job), and purges claimed sandboxes whose owner allocation or
// task is gone or finished.
func (m *Manager) reconcileClaims(ctx context.Context) {
	m.mu.Lock()
	claims := map[string]claimRef{}
	for id, c := range m.inv.claims {
		if _, gone := m.inv.removedClaims[id]; !gone && !m.inv.reserved[id] {
			claims[id] = c
		}
	}
	live := map[string]bool{}
	for _, allocs := range m.inv.allocs {
		for _, a := range allocs {
			live[a.ID] = a.DesiredStatus == api.AllocDesiredStatusRun
		}
	}
	for path := range m.claimCache { // forget records that are gone
		if _, allocID, ok := parseClaimPath(path); ok {
			if _, listed := m.inv.claims[allocID]; !listed {
				if _, added := m.inv.addedClaims[allocID]; !added {
					delete(m.claimCache, path)
				}
			}
		}
	}
	m.mu.Unlock()

	// Read every record first: whether a claim is superseded depends on
	// the others.
	type entry struct {
		ref claimRef
		rec *claimRecord
	}
	entries := map[string]entry{}
	var recs []*claimRecord
	for allocID, ref := range claims {
		if ctx.Err() != nil {
			return
		}
		rec, err := m.claimRecord(ctx, ref.path)
		if err != nil {
			m.log.Warn("cannot read claim record; will retry", "path", ref.path, "error", err)
			continue
		}
		if rec == nil || rec.foreign {
			continue
		}
		entries[allocID] = entry{ref, rec}
		recs = append(recs, rec)
	}
	newest := newestClaims(recs)

	for allocID, e := range entries {
		if ctx.Err() != nil {
			return
		}
		ref, rec, c := e.ref, e.rec, e.rec.claim
		var why string
		var err error
		switch {
		case !live[allocID]:
			why, err = m.sandboxGone(ctx, allocID)
		case rec.reason == reasonRetire && time.Since(c.ClaimedAt) > retireGrace:
			why = "retirement was interrupted"
		case superseded(rec, newest):
			why = whySuperseded
		case c.Owner.AllocID != "":
			why, err = m.ownerGone(ctx, c.Owner)
		}
		if err != nil {
			m.log.Warn("cannot check claim; will retry", "pool", ref.pool, "alloc_id", allocID, "error", err)
			continue
		}
		if why == "" {
			continue
		}
		if err := m.removeClaimed(ctx, ref.pool, c.JobID, allocID); err != nil {
			m.log.Error("cannot clean up leaked claim; will retry", "pool", ref.pool, "alloc_id", allocID, "why", why, "error", err)
			continue
		}
		m.log.Info("cleaned up leaked claim", "pool", ref.pool, "alloc_id", allocID, "job_id", c.JobID,
			"owner_alloc_id", c.Owner.AllocID, "why", why)
	}
}

// removeClaimed purges the job (if known) and deletes the claim.
func (m *Manager) removeClaimed(ctx context.Context, pool, jobID, allocID string) error {
	if jobID == "" {
		jobID = m.jobOfAlloc(allocID)
	}
	if jobID != "" {
		if err := m.purgeJob(ctx, jobID); err != nil {
			return err
		}
	}
	err := m.deleteClaim(ctx, pool, allocID)
	m.kickReplenish()
	return err
}

func (m *Manager) jobOfAlloc(allocID string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if a := m.liveAllocLocked(allocID); a != nil {
		return a.JobID
	}
	return ""
}

// claimRecord returns the cached claim record at path, reading it once.
// It returns nil when the record no longer exists.
func (m *Manager) claimRecord(ctx context.Context, path string) (*claimRecord, error) {
	m.mu.Lock()
	rec := m.claimCache[path]
	m.mu.Unlock()
	if rec != nil {
		return rec, nil
	}
	v, err := m.readVariable(ctx, path)
	if isNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	c := claimFromItems(v.Items)
	rec = &claimRecord{claim: c, reason: v.Items[itemReason], foreign: c.NodeID != m.nodeID}
	m.mu.Lock()
	m.claimCache[path] = rec
	m.mu.Unlock()
	return rec, nil
}

// sandboxGone says why a claimed allocation that is not live in the
// inventory is gone, or "" when it still runs (the inventory trails).
func (m *Manager) sandboxGone(ctx context.Context, allocID string) (string, error) {
	a, err := m.readAlloc(ctx, allocID)
	switch {
	case isNotFound(err):
		return "sandbox allocation no longer exists", nil
	case err != nil:
		return "", fmt.Errorf("read sandbox allocation %s: %w", allocID, err)
	case a.ClientTerminalStatus():
		return "sandbox allocation is " + a.ClientStatus, nil
	case a.ServerTerminalStatus():
		return "sandbox allocation is being stopped", nil
	}
	return "", nil
}

// ownerGone says why a claim's owner no longer needs it, or "".
func (m *Manager) ownerGone(ctx context.Context, o Owner) (string, error) {
	ns := o.Namespace
	if ns == "" {
		ns = m.namespace
	}
	var a *api.Allocation
	err := call(ctx, retryAttempts, func(ctx context.Context) error {
		var err error
		a, _, err = m.client.Allocations().Info(o.AllocID, m.queryOpts(ctx, ns))
		return err
	})
	switch {
	case isNotFound(err):
		return "owner allocation no longer exists", nil
	case err != nil:
		return "", fmt.Errorf("read owner allocation %s: %w", o.AllocID, err)
	case a.ClientTerminalStatus():
		return "owner allocation is " + a.ClientStatus, nil
	}
	if ts := a.TaskStates[o.TaskName]; o.TaskName != "" && ts != nil && ts.State == "dead" {
		return fmt.Sprintf("owner task %q is dead", o.TaskName), nil
	}
	return "", nil
}

// reconcileOrphans retires unclaimed children of pools this node no longer
// has, and purges their template jobs once no child is left.
func (m *Manager) reconcileOrphans(ctx context.Context) {
	m.mu.Lock()
	var retire []*instance
	children := map[string]int{}
	for _, in := range m.inv.orphans {
		children[in.pool]++
		if in.state != stateClaimed && !m.inv.busy[in.jobID] {
			m.inv.busy[in.jobID] = true
			retire = append(retire, in)
		}
	}
	var parents []string
	for id, j := range m.inv.jobs {
		if j.ParentID != "" || j.Meta[metaNode] != m.nodeID {
			continue
		}
		pool := j.Meta[metaPool]
		if _, configured := m.pools[pool]; !configured && pool != "" && children[pool] == 0 {
			parents = append(parents, id)
		}
	}
	m.mu.Unlock()

	for _, in := range retire {
		err := m.retire(ctx, in, "pool no longer configured on this node")
		m.mu.Lock()
		delete(m.inv.busy, in.jobID)
		m.mu.Unlock()
		if err != nil {
			m.log.Error("cannot retire instance of removed pool; will retry", "pool", in.pool, "job_id", in.jobID, "error", err)
		}
	}
	for _, id := range parents {
		if err := m.purgeJob(ctx, id); err != nil {
			m.log.Error("cannot purge template job of removed pool; will retry", "job_id", id, "error", err)
			continue
		}
		m.log.Info("purged template job of a pool no longer configured", "job_id", id)
	}
}
