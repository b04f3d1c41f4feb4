package pool

import (
	"slices"

	"github.com/hashicorp/nomad/api"
)

// Each pool's view of the inventory is built from the lists and overlays
// alone: buildViews writes nothing, so what it counts can be tested without
// a Manager, and rebuildLocked (inventory.go) applies what it saw.

// poolView is a pool's share of the inventory, rebuilt on every change.
type poolView struct {
	counts     Stats
	stopping   int         // live allocations whose job is purged or stopped
	candidates []*instance // warm, current template, not reserved; oldest first
	all        []*instance
}

// viewFacts is what buildViews reads: the inventory's lists and overlays,
// already pruned to the lists' indexes, and what each pool has registered.
type viewFacts struct {
	jobs          map[string]*api.JobListStub
	allocs        map[string][]*api.AllocationListStub
	claims        map[string]claimRef
	addedClaims   map[string]claimRef
	removedClaims map[string]uint64
	removedJobs   map[string]uint64
	claimedJobs   map[string]string      // jobs seen claimed before (keepClaimed)
	reserved      map[string]bool        // allocation IDs a local Claim is trying
	busy          map[string]bool        // job IDs a removal is working on
	prepare       bool                   // Options.Prepare is set: warm needs prepared
	prepared      map[string]bool        // allocation IDs Prepare succeeded for
	readiness     map[string]*readyState // allocation IDs whose readiness is tracked
	pools         map[string]poolFacts   // the pools configured here
}

// poolFacts is what a view needs of a configured pool.
type poolFacts struct {
	tmpl    *warmTemplate // what is registered; nil until it is
	pending int           // dispatches not yet answered or not yet listed
}

// viewsSeen is what buildViews built and what it saw on the way.
type viewsSeen struct {
	views   map[string]*poolView // by configured pool
	orphans []*instance          // children of pools not configured here
	seen    map[string]bool      // child jobs listed and not purged
	claimed map[string]string    // of those, the claimed ones: their claimed allocation
	warm    []*instance          // instances counted warm, of configured pools
	// keepPrepared: with Options.Prepare, the allocation IDs of unclaimed
	// instances whose warm task runs: what Prepare did for them still
	// holds (claimed or gone, it is used up).
	keepPrepared map[string]bool
	// tracked: running allocations of a pool's current template with a
	// readiness check, by allocation ID.
	tracked map[string]*instance
}

// buildViews classifies every listed child job and counts it into its
// pool's view.
func buildViews(f viewFacts) viewsSeen {
	claims := make(map[string]claimRef, len(f.claims)+len(f.addedClaims))
	for id, c := range f.claims {
		if _, gone := f.removedClaims[id]; !gone {
			claims[id] = c
		}
	}
	for id, c := range f.addedClaims {
		claims[id] = c
	}
	r := viewsSeen{
		views:        make(map[string]*poolView, len(f.pools)),
		seen:         map[string]bool{},
		claimed:      map[string]string{},
		keepPrepared: map[string]bool{},
		tracked:      map[string]*instance{},
	}
	for name := range f.pools {
		r.views[name] = &poolView{}
	}
	for id, j := range f.jobs {
		if j.ParentID == "" {
			continue
		}
		if _, purged := f.removedJobs[id]; purged {
			continue
		}
		r.seen[id] = true
		in := keepClaimed(classify(j, f.allocs[id], claims), claims, f.claimedJobs)
		if in.state == stateClaimed {
			r.claimed[id] = in.allocID
		}
		gated := false
		if t := f.pools[in.pool].tmpl; in.state == stateWarm && t != nil && t.ready != nil && t.hash == in.hash && in.allocID != "" {
			r.tracked[in.allocID] = in
			st := f.readiness[in.allocID]
			gated = st == nil || !st.ready // a new one has not passed yet
		}
		if in.state == stateWarm && f.prepare {
			r.keepPrepared[in.allocID] = true
			if !f.prepared[in.allocID] {
				in.state, in.unprepared = stateStarting, true
			}
		}
		if in.state == stateWarm && gated {
			in.state, in.preparing = stateStarting, true
		}
		v := r.views[in.pool]
		if v == nil {
			r.orphans = append(r.orphans, in)
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
			r.warm = append(r.warm, in)
			t := f.pools[in.pool].tmpl
			if !f.reserved[in.allocID] && !f.busy[id] && (t == nil || t.hash == in.hash) {
				v.candidates = append(v.candidates, in)
			}
		case in.state == stateClaimed:
			v.counts.Claimed++
		case in.state == stateFailed:
			v.counts.Failed++
			for _, a := range f.allocs[id] {
				if isLive(a) {
					v.stopping++
				}
			}
		}
	}
	for id, allocs := range f.allocs {
		if r.seen[id] {
			continue
		}
		pool, _, _, _ := parseJobID(id)
		if v := r.views[pool]; v != nil {
			v.stopping += len(allocs)
		}
	}
	for name, v := range r.views {
		v.counts.Starting += f.pools[name].pending
		slices.SortFunc(v.candidates, func(a, b *instance) int { return a.submitted.Compare(b.submitted) })
	}
	return r
}
