package pool

import (
	"maps"
	"math"
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

// facts is what buildViews reads of the inventory (the pools' part aside).
func (inv *inventory) facts(prepare bool) viewFacts {
	return viewFacts{
		jobs: inv.jobs, allocs: inv.allocs, claims: inv.claims,
		addedClaims: inv.addedClaims, removedClaims: inv.removedClaims, removedJobs: inv.removedJobs,
		claimedJobs: inv.claimedJobs, reserved: inv.reserved, busy: inv.busy,
		prepare: prepare, prepared: inv.prepared, readiness: inv.readiness,
	}
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

// rebuildLocked recomputes every pool's view from the lists and overlays
// (view.go), applies what it saw to the Manager's bookkeeping, wakes waiting
// claims and, when counts changed, the OnChange notifier.
func (m *Manager) rebuildLocked() {
	inv := &m.inv
	inv.pruneOverlays()
	facts := inv.facts(m.prepare != nil)
	facts.pools = make(map[string]poolFacts, len(m.pools))
	for name, p := range m.pools {
		for id, idx := range p.expected {
			if _, listed := inv.jobs[id]; listed || idx <= inv.jobsIndex {
				delete(p.expected, id)
			}
		}
		facts.pools[name] = poolFacts{tmpl: p.tmpl, pending: p.inflight + len(p.expected)}
	}
	r := buildViews(facts)

	inv.orphans = r.orphans
	for _, in := range r.warm {
		if !inv.warmSeen[in.jobID] {
			// Once per instance: one that turns warm again (prepared
			// anew, a claim given back) proves nothing new of the
			// template and has not warmed up again.
			inv.warmSeen[in.jobID] = true
			p := m.pools[in.pool]
			p.resetFailures() // a new warm instance: the template works
			m.warmedUpLocked(p, in)
		}
	}
	maps.Copy(inv.claimedJobs, r.claimed)
	for id := range inv.warmSeen {
		if !r.seen[id] {
			delete(inv.warmSeen, id)
		}
	}
	for id := range inv.claimedJobs {
		if !r.seen[id] {
			delete(inv.claimedJobs, id)
		}
	}
	for id := range inv.prepared {
		if !r.keepPrepared[id] { // claimed or gone: its preparation is used up
			delete(inv.prepared, id)
		}
	}
	for id := range inv.prepRetry {
		if !r.keepPrepared[id] {
			delete(inv.prepRetry, id)
		}
	}
	m.trackReadinessLocked(r.tracked)
	for name, p := range m.pools {
		p.view = *r.views[name]
		m.trackUnplacedLocked(p)
	}
	close(m.changed)
	m.changed = make(chan struct{})
	m.signalChangeLocked()
	m.kickReplenish()
}

// pruneOverlays forgets the writes of this Manager that the lists have
// caught up with.
func (inv *inventory) pruneOverlays() {
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
