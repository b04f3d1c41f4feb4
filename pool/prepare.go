package pool

import (
	"context"
	"fmt"
	"time"
)

// Preparation: a user of the pool (the driver) may need to do something with
// each warm allocation before it can be handed out quickly, such as opening
// the launch path into the sandbox. With Options.Prepare set, an allocation
// whose task runs counts as starting until Prepare has succeeded for it in
// this Manager; only then is it warm and a claim candidate. A Prepare that
// fails retires the allocation and counts as a failure of the pool's template
// (the next dispatch backs off), with the error in the pool's log.

const (
	// prepareTimeout bounds one Prepare call.
	prepareTimeout = 30 * time.Second
	// prepareParallel bounds concurrent Prepare calls.
	prepareParallel = 4
)

// prepareLoop prepares every allocation that is ready but not prepared, as
// the inventory changes.
func (m *Manager) prepareLoop() {
	sem := make(chan struct{}, prepareParallel)
	for {
		m.mu.Lock()
		changed := m.changed
		var todo []*instance
		for _, name := range m.names {
			for _, in := range m.pools[name].view.all {
				if in.unprepared && !m.inv.preparing[in.allocID] && !m.inv.busy[in.jobID] {
					m.inv.preparing[in.allocID] = true
					todo = append(todo, in)
				}
			}
		}
		m.mu.Unlock()
		for _, in := range todo {
			select {
			case sem <- struct{}{}:
			case <-m.ctx.Done():
				return
			}
			m.goFn(func() {
				defer func() { <-sem }()
				m.prepareOne(in)
			})
		}
		select {
		case <-m.ctx.Done():
			return
		case <-changed:
		}
	}
}

// prepareOne runs Prepare for one allocation and records the outcome.
func (m *Manager) prepareOne(in *instance) {
	ctx, cancel := context.WithTimeout(m.ctx, prepareTimeout)
	began := time.Now()
	err := m.prepare(ctx, WarmAlloc{Pool: in.pool, AllocID: in.allocID, JobID: in.jobID, TaskName: in.task})
	cancel()
	if m.ctx.Err() != nil {
		return
	}
	m.mu.Lock()
	delete(m.inv.preparing, in.allocID)
	p := m.pools[in.pool]
	if err == nil {
		m.inv.prepared[in.allocID] = true
	} else if p != nil {
		err = fmt.Errorf("prepare warm allocation %s of pool %q: %w", in.allocID, in.pool, err)
		p.noteFailure(time.Now(), err)
		p.prepFail++
		m.inv.busy[in.jobID] = true
	}
	m.rebuildLocked()
	m.mu.Unlock()
	if err != nil {
		m.log.Error("preparing a warm allocation failed; replacing it", "pool", in.pool, "alloc_id", in.allocID, "error", err)
		if p != nil {
			m.goFn(func() { m.runRemoval(in, "preparing it failed", p) })
		}
		return
	}
	m.log.Debug("prepared warm allocation", "pool", in.pool, "alloc_id", in.allocID, "took", time.Since(began))
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
