package pool

import (
	"math"
	"slices"
	"time"

	"github.com/hashicorp/nomad/api"
)

// The inventory is the join of three Nomad lists, each kept current by a
// blocking query: this node's agentkernel-pool jobs (templates and their
// dispatched children, with meta), the live allocations of those children,
// and the claim variables. Writes this Manager makes are overlaid until the
// list that will show them has caught up with the write's index, so counts
// never go stale in between and nothing is created twice from stale state.

const (
	jobPrefix   = "agentkernel-pool-"
	dispatchSep = "/dispatch-"
	claimRoot   = "agentkernel-pool/"

	blockWait    = 5 * time.Minute                           // server-side wait of a blocking query
	blockTimeout = blockWait + blockWait/16 + 15*time.Second // Nomad adds up to wait/16 jitter
	listFloor    = 25 * time.Millisecond                     // least time between two lists of one kind
)

// claimRef is a claim record as the variable list shows it.
type claimRef struct {
	pool  string
	path  string
	index uint64 // ModifyIndex of the variable (or of our write)
}

type inventory struct {
	jobs        map[string]*api.JobListStub          // this node's pool jobs, by ID
	allocs      map[string][]*api.AllocationListStub // live allocations of children, by job ID
	claims      map[string]claimRef                  // claim records, by sandbox allocation ID
	jobsIndex   uint64
	allocsIndex uint64
	claimsIndex uint64

	addedClaims   map[string]claimRef    // our creates, until the claim list reaches them
	removedClaims map[string]uint64      // our deletes, until the claim list reaches them
	removedJobs   map[string]uint64      // our purges, until the job list reaches them
	reserved      map[string]bool        // allocation IDs a local Claim is trying right now
	busy          map[string]bool        // job IDs a removal is working on
	warmSeen      map[string]bool        // job IDs seen warm (a new one: the template works; its warm-up learned)
	claimedJobs   map[string]string      // job IDs seen claimed: their claimed allocation (keepClaimed)
	orphans       []*instance            // children of pools not configured here
	prepared      map[string]bool        // allocation IDs Prepare succeeded for
	preparing     map[string]bool        // allocation IDs a Prepare call is working on
	prepRetry     map[string]prepRetry   // allocation IDs whose Prepare backs off
	readiness     map[string]*readyState // running allocations of pools with a readiness check (ready.go)
}

func newInventory() inventory {
	return inventory{
		jobs:          map[string]*api.JobListStub{},
		allocs:        map[string][]*api.AllocationListStub{},
		claims:        map[string]claimRef{},
		addedClaims:   map[string]claimRef{},
		removedClaims: map[string]uint64{},
		removedJobs:   map[string]uint64{},
		reserved:      map[string]bool{},
		busy:          map[string]bool{},
		warmSeen:      map[string]bool{},
		claimedJobs:   map[string]string{},
		prepared:      map[string]bool{},
		preparing:     map[string]bool{},
		prepRetry:     map[string]prepRetry{},
		readiness:     map[string]*readyState{},
	}
}

// pendingIndex marks a local write whose index is not known yet.
const pendingIndex = math.MaxUint64

// poolView is a pool's share of the inventory, rebuilt on every change.
type poolView struct {
	counts     Stats
	stopping   int         // live allocations whose job is purged or stopped
	candidates []*instance // warm, current template, not reserved; oldest first
	all        []*instance
}

// rebuildLocked recomputes every pool's view from the lists and overlays,
// wakes waiting claims and, when counts changed, the OnChange notifier.
func (m *Manager) rebuildLocked() {
	inv := &m.inv
	for id, idx := range inv.addedClaims {
		if idx.index <= inv.claimsIndex {
			delete(inv.addedClaims, id)
		}
	}
	for id, idx := range inv.removedClaims {
		if idx <= inv.claimsIndex {
			delete(inv.removedClaims, id)
		}
	}
	for id, idx := range inv.removedJobs {
		if idx <= inv.jobsIndex {
			delete(inv.removedJobs, id)
		}
	}
	claims := make(map[string]claimRef, len(inv.claims)+len(inv.addedClaims))
	for id, c := range inv.claims {
		if _, gone := inv.removedClaims[id]; !gone {
			claims[id] = c
		}
	}
	for id, c := range inv.addedClaims {
		claims[id] = c
	}

	views := make(map[string]*poolView, len(m.pools))
	for name := range m.pools {
		views[name] = &poolView{}
	}
	inv.orphans = inv.orphans[:0]
	seen := map[string]bool{} // jobs whose live allocations are accounted for
	ready := map[string]bool{}
	tracked := map[string]bool{} // allocations whose readiness is tracked
	for id, j := range inv.jobs {
		if j.ParentID == "" {
			continue
		}
		if _, purged := inv.removedJobs[id]; purged {
			continue
		}
		seen[id] = true
		in := inv.keepClaimed(classify(j, inv.allocs[id], claims), claims)
		gated := in.state == stateWarm && m.readyGateLocked(in, tracked)
		if in.state == stateWarm && m.prepare != nil {
			ready[in.allocID] = true
			if !inv.prepared[in.allocID] {
				in.state, in.unprepared = stateStarting, true
			}
		}
		if in.state == stateWarm && gated {
			in.state, in.preparing = stateStarting, true
		}
		v := views[in.pool]
		if v == nil {
			inv.orphans = append(inv.orphans, in)
			continue
		}
		v.all = append(v.all, in)
		switch {
		case in.preparing:
			v.counts.Preparing++
		case in.state == stateStarting:
			v.counts.Starting++
		case in.state == stateWarm:
			v.counts.Warm++
			p := m.pools[in.pool]
			if !inv.warmSeen[id] {
				// Once per instance: one that turns warm again (prepared
				// anew, a claim given back) proves nothing new of the
				// template and has not warmed up again.
				inv.warmSeen[id] = true
				p.resetFailures() // a new warm instance: the template works
				m.warmedUpLocked(p, in)
			}
			if !inv.reserved[in.allocID] && !inv.busy[id] && (p.tmpl == nil || p.tmpl.hash == in.hash) {
				v.candidates = append(v.candidates, in)
			}
		case in.state == stateClaimed:
			v.counts.Claimed++
		case in.state == stateFailed:
			v.counts.Failed++
			for _, a := range inv.allocs[id] {
				if isLive(a) {
					v.stopping++
				}
			}
		}
	}
	for id := range inv.warmSeen {
		if !seen[id] {
			delete(inv.warmSeen, id)
		}
	}
	for id := range inv.claimedJobs {
		if !seen[id] {
			delete(inv.claimedJobs, id)
		}
	}
	for id := range inv.prepared {
		if !ready[id] { // claimed or gone: its preparation is used up
			delete(inv.prepared, id)
		}
	}
	for id := range inv.prepRetry {
		if !ready[id] {
			delete(inv.prepRetry, id)
		}
	}
	for id := range inv.readiness {
		if !tracked[id] { // claimed or gone: readiness is a warm allocation's
			delete(inv.readiness, id)
		}
	}
	for id, allocs := range inv.allocs {
		if seen[id] {
			continue
		}
		pool, _, _, _ := parseJobID(id)
		if v := views[pool]; v != nil {
			v.stopping += len(allocs)
		}
	}
	for name, p := range m.pools {
		v := views[name]
		for id, idx := range p.expected {
			if _, listed := inv.jobs[id]; listed || idx <= inv.jobsIndex {
				delete(p.expected, id)
			}
		}
		v.counts.Starting += p.inflight + len(p.expected)
		slices.SortFunc(v.candidates, func(a, b *instance) int { return a.submitted.Compare(b.submitted) })
		p.view = *v
		m.trackUnplacedLocked(p)
	}
	close(m.changed)
	m.changed = make(chan struct{})
	m.signalChangeLocked()
	m.kickReplenish()
}

// signalChangeLocked wakes the OnChange notifier when any count changed.
func (m *Manager) signalChangeLocked() {
	if m.onChange == nil {
		return
	}
	changed := false
	for name, p := range m.pools {
		if s := p.stats(); m.lastSent[name] != s {
			m.lastSent[name] = s
			changed = true
		}
	}
	if changed {
		select {
		case m.notify <- struct{}{}:
		default:
		}
	}
}
