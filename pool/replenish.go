package pool

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-pool/internal/nomadapi"
)

const (
	replenishEvery = 10 * time.Second // safety net; normally a change wakes it
	// postClaimQuiet is how long the replacement of a claimed allocation
	// waits: starting a sandbox (a container, a chroot) takes the node's CPUs
	// for a while, and the claimer's own start (its launch, in milliseconds)
	// goes first. A claim waiting for a warm allocation is not held back.
	postClaimQuiet = 300 * time.Millisecond
	// defaultStartTimeout is how long a warm instance may stay starting
	// (placement, image pulls, artifacts) before it is replaced.
	defaultStartTimeout = 5 * time.Minute
)

// quietAfterClaim holds back replacements for postClaimQuiet after a claim,
// counted from the first claim of a burst: were each claim to restart it, a
// steady stream of claims (2/s arrive closer than postClaimQuiet about half
// the time) would hold the replacements back until a lull, and the warm
// target would be met a warm-up and a lull late.
func (p *pool) quietAfterClaim(now time.Time) {
	if !now.Before(p.quietUntil) {
		p.quietUntil = now.Add(postClaimQuiet)
	}
}

// replenishLoop keeps every pool at its target. It runs after each change
// of the inventory, claim or release, and when a dispatch backoff ends.
func (m *Manager) replenishLoop() {
	t := time.NewTimer(replenishEvery)
	defer t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-m.kick:
		case <-t.C:
		}
		next := time.Now().Add(replenishEvery)
		for _, name := range m.names {
			if at := m.replenish(m.pools[name]); !at.IsZero() && at.Before(next) {
				next = at
			}
		}
		t.Reset(max(time.Until(next), 10*time.Millisecond))
	}
}

// plan is what one replenish pass does to a pool.
type plan struct {
	purge    []*instance // dead: purge outright
	retire   []*instance // unwanted but maybe alive: retire under a claim
	dispatch int
}

// replenish plans and starts the work that brings pool p to its target:
// warm + starting = size (+ waiting claims) while warm + starting + claimed
// (+ allocations still stopping) stays within max. It returns when the next
// pass is due because of a dispatch backoff, or zero.
func (m *Manager) replenish(p *pool) time.Time {
	m.mu.Lock()
	if p.tmpl == nil { // never registered: nothing to dispatch from
		m.mu.Unlock()
		return time.Time{}
	}
	pl, retryAt := m.planLocked(p, time.Now())
	m.signalChangeLocked() // the target may have moved
	p.inflight += pl.dispatch
	for _, in := range append(pl.purge, pl.retire...) {
		m.inv.busy[in.jobID] = true
	}
	if len(pl.purge)+len(pl.retire)+pl.dispatch > 0 {
		m.rebuildLocked()
	}
	m.mu.Unlock()

	for _, in := range pl.purge {
		m.goFn(func() { m.runRemoval(in, "", p) })
	}
	for _, in := range pl.retire {
		m.goFn(func() { m.runRemoval(in, retireReason(in, p), p) })
	}
	for range pl.dispatch {
		m.goFn(func() { m.dispatch(p) })
	}
	return retryAt
}

const whyStartTimeout = "did not start in time"

func retireReason(in *instance, p *pool) string {
	switch {
	case p.tmpl != nil && in.hash != p.tmpl.hash:
		return "template changed"
	case in.state == stateStarting:
		return whyStartTimeout
	default:
		return "more warm instances than the pool's target"
	}
}

// planLocked decides a pass for p from its current view.
func (m *Manager) planLocked(p *pool, now time.Time) (plan, time.Time) {
	var pl plan
	v, hash := &p.view, p.tmpl.hash
	warm, starting := v.counts.Warm, v.counts.Starting+v.counts.Preparing
	var spare []*instance // current, warm, not reserved: may be trimmed
	retiring, claiming := 0, 0
	for _, in := range v.all {
		switch {
		case m.inv.busy[in.jobID]:
			// Being removed: it still holds resources until it stops.
			switch in.state {
			case stateWarm:
				warm--
				retiring++
			case stateStarting:
				starting--
				retiring++
			}
		case in.allocID != "" && m.inv.reserved[in.allocID]:
			// A Claim is taking it right now: plan as if it were claimed,
			// or waiting claims would be counted against it twice.
			if in.state == stateWarm {
				warm--
				claiming++
			}
		case in.state == stateFailed:
			pl.purge = append(pl.purge, in)
		case in.state == stateWarm && in.hash != hash:
			pl.retire = append(pl.retire, in)
			warm--
		// An unprepared instance runs: Prepare has its own failure rules,
		// and its submit time may be long past (a restarted plugin
		// prepares the warm instances of the one before).
		// A preparing one has its ReadyTimeout instead (ready.go).
		case in.state == stateStarting && (in.hash != hash || now.Sub(in.submitted) > m.startTimeout && !in.unprepared && !in.preparing):
			pl.retire = append(pl.retire, in)
			starting--
			if in.hash == hash {
				p.noteFailure(now, fmt.Errorf("warm instance %s did not become warm within %s", in.jobID, m.startTimeout), "")
			}
		case in.state == stateWarm:
			spare = append(spare, in)
		}
	}
	// Before the dispatch below: its replacement waits for the backoff.
	for _, in := range pl.purge {
		p.noteFailure(now, fmt.Errorf("warm instance %s died before being claimed", in.jobID), "")
	}
	// Instances being removed keep their resources until they stop.
	occupied := v.counts.Claimed + claiming + v.stopping + retiring + len(pl.retire)
	var fall time.Time // when the demand target may fall next
	p.target, fall = p.demand.target(m.now())
	target := min(p.target+p.waiters, p.cfg.Max-occupied)
	need := target - (warm + starting)
	if p.failures > 0 {
		// The template failed last time: try one instance at a time
		// until one turns warm.
		need = min(need, 1-starting)
	}
	switch {
	case need > 0 && p.waiters == 0 && now.Before(p.quietUntil):
		return pl, earliest(p.quietUntil, fall)
	case need > 0 && now.Before(p.retryAt):
		return pl, earliest(p.retryAt, fall)
	case need > 0:
		pl.dispatch = need
	case need < 0 && p.waiters == 0 && p.inflight == 0 && len(p.expected) == 0:
		// Surplus (the demand target fell, claims gave up waiting, a
		// smaller size): retire the oldest unclaimed warm ones; starting
		// ones finish first.
		slices.SortFunc(spare, func(a, b *instance) int { return a.submitted.Compare(b.submitted) })
		pl.retire = append(pl.retire, spare[:min(-need, len(spare))]...)
	}
	return pl, fall
}

// earliest is the earlier of two times, a zero time meaning none.
func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

// runRemoval purges (why == "") or retires an instance and clears its busy
// mark either way.
func (m *Manager) runRemoval(in *instance, why string, p *pool) {
	ctx, cancel := context.WithTimeout(m.ctx, cleanupTimeout)
	defer cancel()
	m.dispatchSL <- struct{}{}
	defer func() { <-m.dispatchSL }()
	if why == "" || why == whyStartTimeout {
		m.explainFailure(ctx, p, in) // before the purge takes its allocations
	}
	var err error
	if why == "" {
		err = m.purgeJob(ctx, in.jobID)
		if err == nil {
			m.log.Info("purged dead warm instance", "pool", in.pool, "job_id", in.jobID, "alloc_id", in.allocID)
		}
	} else {
		err = m.retire(ctx, in, why)
	}
	m.mu.Lock()
	delete(m.inv.busy, in.jobID)
	m.rebuildLocked()
	m.mu.Unlock()
	if err != nil && m.ctx.Err() == nil {
		m.log.Error("removing warm instance failed; will retry", "pool", p.cfg.Name, "job_id", in.jobID, "error", err)
	}
	m.kickReplenish()
}

// dispatch starts one warm instance of p. The child is counted as starting
// from before the call until the job list shows it, so no pass creates more
// than the target from a list that trails the dispatches.
func (m *Manager) dispatch(p *pool) {
	select {
	case m.dispatchSL <- struct{}{}:
	case <-m.ctx.Done():
		m.mu.Lock()
		p.inflight--
		m.mu.Unlock()
		return
	}
	defer func() { <-m.dispatchSL }()
	token := make([]byte, 12)
	_, _ = rand.Read(token)
	var resp *api.JobDispatchResponse
	err := call(m.ctx, retryAttempts, func(ctx context.Context) error {
		wo := m.writeOpts(ctx, m.namespace)
		// The same token on every attempt: a retry after a lost answer
		// returns the first child instead of making a second.
		wo.IdempotencyToken = hex.EncodeToString(token)
		var err error
		resp, _, err = m.client.Jobs().DispatchOpts(&api.DispatchOptions{
			JobID: p.jobID,
			Meta:  map[string]string{metaDispatcher: m.instance},
		}, wo)
		return err
	})
	now := time.Now()
	if m.observer != nil && m.ctx.Err() == nil {
		m.observer.Dispatched(p.cfg.Name, err)
	}
	m.mu.Lock()
	p.inflight--
	if err == nil {
		p.expected[resp.DispatchedJobID] = resp.JobCreateIndex
	} else if m.ctx.Err() == nil {
		err = fmt.Errorf("dispatch warm instance of pool %q from %s: %w", p.cfg.Name, p.jobID, denied(err, "dispatch-job in namespace "+strconv.Quote(m.namespace)))
		reason := ""
		if nomadapi.StatusCode(err) == http.StatusForbidden { // will not pass by itself
			reason = err.Error()
		}
		p.noteFailure(now, err, reason)
	}
	m.rebuildLocked()
	m.mu.Unlock()
	switch {
	case err == nil:
		m.log.Debug("dispatched warm instance", "pool", p.cfg.Name, "job_id", resp.DispatchedJobID)
	case m.ctx.Err() != nil:
	default:
		m.log.Error("dispatch failed; backing off", "pool", p.cfg.Name, "error", err)
		if isNotFound(err) {
			// The template job is gone (deregistered behind our back):
			// register it again.
			m.goFn(func() {
				ctx, cancel := context.WithTimeout(m.ctx, cleanupTimeout)
				defer cancel()
				_ = m.ensureTemplate(ctx, p, true) // logs and records its error
			})
		}
	}
	m.kickReplenish()
}
