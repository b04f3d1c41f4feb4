package pool

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/nomad/api"
)

// The inventory's three lists (jobs, allocations, claims), each read once at
// Start and then followed by a blocking query.

// syncIndexes are the indexes of the first full read of each list.
type syncIndexes struct{ jobs, allocs, claims uint64 }

// syncInventory reads all three lists once, so counts are exact when Start
// returns. A failed list is retried by its watcher.
func (m *Manager) syncInventory(ctx context.Context) (syncIndexes, error) {
	var idx syncIndexes
	var errs []error
	for _, s := range []struct {
		name string
		list func(context.Context, uint64) (uint64, error)
		out  *uint64
	}{
		{"jobs", m.listJobs, &idx.jobs},
		{"allocations", m.listAllocs, &idx.allocs},
		{"claims", m.listClaims, &idx.claims},
	} {
		err := call(ctx, retryAttempts, func(ctx context.Context) error {
			var err error
			*s.out, err = s.list(ctx, 0)
			return err
		})
		if err != nil {
			err = fmt.Errorf("read %s of node %s: %w", s.name, m.nodeID, denied(err, listNeeds(s.name, m.namespace)))
			m.setWatchErr(s.name, err)
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return idx, fmt.Errorf("read pool inventory: %w", errors.Join(errs...))
	}
	return idx, nil
}

func (m *Manager) watchJobs(index uint64)   { m.watch("jobs", index, m.listJobs) }
func (m *Manager) watchAllocs(index uint64) { m.watch("allocations", index, m.listAllocs) }
func (m *Manager) watchClaims(index uint64) { m.watch("claims", index, m.listClaims) }

// watch runs blocking queries of one list until the Manager stops. Failures
// are logged, reported by Health, and retried with jittered backoff.
func (m *Manager) watch(name string, index uint64, list func(context.Context, uint64) (uint64, error)) {
	var fails int
	var last time.Time
	for {
		if wait := listFloor - time.Since(last); wait > 0 && !sleepCtx(m.ctx, wait) {
			return
		}
		ctx, cancel := context.WithTimeout(m.ctx, blockTimeout)
		next, err := list(ctx, index)
		cancel()
		last = time.Now()
		if m.ctx.Err() != nil {
			return
		}
		if err != nil {
			fails++
			err = fmt.Errorf("watch %s of node %s: %w", name, m.nodeID, denied(err, listNeeds(name, m.namespace)))
			m.setWatchErr(name, err)
			m.log.Warn("inventory watch failed; retrying", "watch", name, "attempt", fails, "error", err)
			if !sleepCtx(m.ctx, backoff(fails-1, 250*time.Millisecond, 30*time.Second)) {
				return
			}
			continue
		}
		if fails > 0 {
			m.log.Info("inventory watch recovered", "watch", name)
		}
		fails = 0
		m.setWatchErr(name, nil)
		// The result is complete either way; a lower index means the
		// servers' state was reset, and the next query starts from it.
		// An empty table answers index 0, which would not block.
		index = max(next, 1)
	}
}

func (m *Manager) setWatchErr(name string, err error) {
	m.mu.Lock()
	m.watchErr[name] = err
	m.mu.Unlock()
}

// listJobs reads this node's pool jobs, blocking until index is passed.
func (m *Manager) listJobs(ctx context.Context, index uint64) (uint64, error) {
	q := m.queryOpts(ctx, m.namespace)
	q.Prefix = jobPrefix
	q.Filter = fmt.Sprintf(`ID matches "^%s.+-%s(%s.+)?$"`, jobPrefix, m.node8, dispatchSep)
	q.WaitIndex, q.WaitTime = index, blockWait
	stubs, qm, err := m.client.Jobs().ListOptions(&api.JobListOptions{Fields: &api.JobListFields{Meta: true}}, q)
	if err != nil {
		return 0, err
	}
	jobs := make(map[string]*api.JobListStub, len(stubs))
	for _, j := range stubs {
		if _, node8, _, ok := parseJobID(j.ID); ok && node8 == m.node8 {
			jobs[j.ID] = j
		}
	}
	m.store(func(inv *inventory) { inv.jobs, inv.jobsIndex = jobs, qm.LastIndex })
	return qm.LastIndex, nil
}

// liveAllocFilter selects allocations of this node's pool children that are
// not terminal; terminal ones leave the list, and their jobs go dead.
func liveAllocFilter(node8, nodeID string) string {
	f := fmt.Sprintf(`JobID matches "^%s.+-%s%s" and (ClientStatus == "pending" or ClientStatus == "running" or ClientStatus == "unknown")`,
		jobPrefix, node8, dispatchSep)
	if nodeID != "" {
		f += fmt.Sprintf(` and NodeID == %q`, nodeID)
	}
	return f
}

// listAllocs reads live allocations of this node's children.
func (m *Manager) listAllocs(ctx context.Context, index uint64) (uint64, error) {
	q := m.queryOpts(ctx, m.namespace)
	q.Filter = liveAllocFilter(m.node8, m.nodeID)
	q.WaitIndex, q.WaitTime = index, blockWait
	stubs, qm, err := m.client.Allocations().List(q)
	if err != nil {
		return 0, err
	}
	allocs := map[string][]*api.AllocationListStub{}
	for _, a := range stubs {
		if _, node8, child, ok := parseJobID(a.JobID); ok && child && node8 == m.node8 && isLive(a) {
			allocs[a.JobID] = append(allocs[a.JobID], a)
		}
	}
	m.store(func(inv *inventory) { inv.allocs, inv.allocsIndex = allocs, qm.LastIndex })
	return qm.LastIndex, nil
}

// listClaims reads every claim record (all nodes: paths carry no node).
func (m *Manager) listClaims(ctx context.Context, index uint64) (uint64, error) {
	q := m.queryOpts(ctx, m.namespace)
	q.WaitIndex, q.WaitTime = index, blockWait
	vars, qm, err := m.client.Variables().PrefixList(claimRoot, q)
	if err != nil {
		return 0, err
	}
	claims := make(map[string]claimRef, len(vars))
	for _, v := range vars {
		if pool, allocID, ok := parseClaimPath(v.Path); ok {
			claims[allocID] = claimRef{pool: pool, path: v.Path, index: v.ModifyIndex}
		}
	}
	m.store(func(inv *inventory) { inv.claims, inv.claimsIndex = claims, qm.LastIndex })
	return qm.LastIndex, nil
}

// store puts one list's answer into the inventory and rebuilds the pools'
// views from it.
func (m *Manager) store(set func(*inventory)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	set(&m.inv)
	m.rebuildLocked()
}

// listNeeds names the ACL capability an inventory list needs.
func listNeeds(list, namespace string) string {
	if list == "claims" {
		return fmt.Sprintf("variables list and read on %s/* in namespace %q", strings.TrimSuffix(claimRoot, "/"), namespace)
	}
	return fmt.Sprintf("list-jobs and read-job in namespace %q", namespace)
}
