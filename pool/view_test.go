package pool

import (
	"maps"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"
)

// viewChild is a dispatched child job of pool on node abcdef12, submitted
// sec seconds after a fixed time, from template hash.
func viewChild(pool, n, hash string, sec int) *api.JobListStub {
	parent := jobPrefix + pool + "-abcdef12"
	return &api.JobListStub{
		ID:         parent + dispatchSep + n,
		ParentID:   parent,
		Status:     "running",
		SubmitTime: time.Unix(1_700_000_000+int64(sec), 0).UnixNano(),
		Meta:       map[string]string{metaPool: pool, metaTask: "main", metaHash: hash},
	}
}

// viewAlloc is an allocation in client status status whose task "main" runs.
func viewAlloc(id, status string) *api.AllocationListStub {
	return &api.AllocationListStub{
		ID: id, ClientStatus: status, DesiredStatus: api.AllocDesiredStatusRun,
		TaskStates: map[string]*api.TaskState{"main": {State: "running"}},
	}
}

// TestBuildViews counts one of each kind of child into its pool's view from
// the lists and overlays alone, without a Manager.
func TestBuildViews(t *testing.T) {
	inv := newInventory()
	f := inv.facts(true)
	f.pools = map[string]poolFacts{
		"web":  {tmpl: &warmTemplate{hash: "h2"}, pending: 2},
		"rdy":  {tmpl: &warmTemplate{hash: "r1", ready: &readySpec{command: "true"}}},
		"many": {}, // no template registered yet: any warm one is a candidate
	}
	// add lists a child with a running allocation "a-<pool>-<n>", prepared.
	add := func(pool, n, hash string, sec int) (jobID, allocID string) {
		j := viewChild(pool, n, hash, sec)
		allocID = "a-" + pool + "-" + n
		f.jobs[j.ID] = j
		f.allocs[j.ID] = []*api.AllocationListStub{viewAlloc(allocID, api.AllocClientStatusRunning)}
		f.prepared[allocID] = true
		return j.ID, allocID
	}
	tmpl := viewChild("web", "", "h2", 0)
	tmpl.ID, tmpl.ParentID = tmpl.ParentID, ""
	f.jobs[tmpl.ID] = tmpl // a template is no instance

	_, web1 := add("web", "1", "h2", 30)
	_, web2 := add("web", "2", "h2", 10)
	_, web3 := add("web", "3", "h1", 5) // warm, of the old template
	_, web4 := add("web", "4", "h2", 1)
	f.reserved[web4] = true // a local Claim is trying it
	job5, web5 := add("web", "5", "h2", 2)
	f.busy[job5] = true // a removal is working on it
	job6, web6 := add("web", "6", "h2", 3)
	f.claims[web6] = claimRef{pool: "web", path: ClaimPath("web", web6)}
	job7, web7 := add("web", "7", "h2", 4)
	f.addedClaims[web7] = claimRef{pool: "web", path: ClaimPath("web", web7)} // our claim, not listed yet
	_, web8 := add("web", "8", "h2", 20)
	f.claims[web8] = claimRef{pool: "web", path: ClaimPath("web", web8)}
	f.removedClaims[web8] = pendingIndex // our release, still listed
	job9, _ := add("web", "9", "h2", 6)
	f.jobs[job9].Status = "dead" // failed: two live allocations left, one ended
	f.allocs[job9] = []*api.AllocationListStub{
		viewAlloc("a-web-9a", api.AllocClientStatusRunning),
		viewAlloc("a-web-9b", api.AllocClientStatusPending),
		viewAlloc("a-web-9c", api.AllocClientStatusComplete),
	}
	_, web10 := add("web", "10", "h2", 7)
	delete(f.prepared, web10) // runs, Prepare has not succeeded yet
	job11, _ := add("web", "11", "h2", 8)
	f.removedJobs[job11] = pendingIndex // our purge: its allocation is stopping
	job12, _ := add("web", "12", "h2", 9)
	delete(f.allocs, job12) // claimed here before, its allocation has ended since
	f.claimedJobs[job12] = "a-web-12-old"
	f.claims["a-web-12-old"] = claimRef{pool: "web", path: ClaimPath("web", "a-web-12-old")}
	j13 := viewChild("web", "13", "h2", 11) // dispatched, no allocation yet
	job13 := j13.ID
	f.jobs[job13] = j13
	f.allocs[jobPrefix+"web-abcdef12"+dispatchSep+"14"] = []*api.AllocationListStub{
		viewAlloc("a-web-14", api.AllocClientStatusRunning), // its job has left the list
	}

	_, rdy1 := add("rdy", "1", "r1", 1) // readiness never asked
	_, rdy2 := add("rdy", "2", "r1", 2)
	f.readiness[rdy2] = &readyState{ready: true}
	_, rdy3 := add("rdy", "3", "r1", 3)
	f.readiness[rdy3] = &readyState{ready: false}

	gone1Job, gone1 := add("gone", "1", "g", 1) // a pool not configured here

	// Ten candidates submitted in an order unlike their names, so the
	// order of a map is not taken for the oldest first.
	many := make([]string, 10) // by submission
	for i, sec := range []int{7, 3, 9, 0, 5, 8, 1, 6, 2, 4} {
		_, many[sec] = add("many", strconv.Itoa(i), "h"+strconv.Itoa(i), sec)
	}

	r := buildViews(f)
	// What it saw is returned, not written: applying it is rebuildLocked's.
	if len(f.claimedJobs) != 1 || len(f.readiness) != 2 {
		t.Errorf("buildViews wrote its facts: claimedJobs %v, readiness of %v", f.claimedJobs, slices.Sorted(maps.Keys(f.readiness)))
	}

	web, rdy := r.views["web"], r.views["rdy"]
	if web == nil || rdy == nil || len(r.views) != 3 {
		t.Fatalf("views: %v", slices.Sorted(maps.Keys(r.views)))
	}
	// Warm: 1 2 3 4 5 8; claimed: 6 7 12; failed: 9; starting: 10 13 and
	// the 2 pending dispatches.
	if want := (Stats{Warm: 6, Claimed: 3, Failed: 1, Starting: 4}); web.counts != want {
		t.Errorf("web counts: got %+v, want %+v", web.counts, want)
	}
	// The failed job's 2 live allocations, the purged job's 1, the unlisted job's 1.
	if web.stopping != 4 {
		t.Errorf("web stopping: got %d, want 4", web.stopping)
	}
	if got, want := allocIDs(web.candidates), []string{web2, web8, web1}; !slices.Equal(got, want) {
		t.Errorf("web candidates (oldest first): got %v, want %v", got, want)
	}
	if len(web.all) != 12 {
		t.Errorf("web instances: got %d, want 12 (all listed children but the purged one)", len(web.all))
	}
	if want := (Stats{Warm: 1, Preparing: 2}); rdy.counts != want {
		t.Errorf("rdy counts: got %+v, want %+v", rdy.counts, want)
	}
	if got, want := allocIDs(rdy.candidates), []string{rdy2}; !slices.Equal(got, want) {
		t.Errorf("rdy candidates: got %v, want %v", got, want)
	}

	if got := allocIDs(r.views["many"].candidates); !slices.Equal(got, many) {
		t.Errorf("many candidates (oldest first): got %v, want %v", got, many)
	}

	if len(r.orphans) != 1 || r.orphans[0].jobID != gone1Job || r.orphans[0].state != stateWarm {
		t.Errorf("orphans: got %v, want the warm instance of pool gone", r.orphans)
	}
	if r.seen[job11] || r.seen[tmpl.ID] || !r.seen[job13] || !r.seen[gone1Job] || len(r.seen) != 26 {
		t.Errorf("seen: got %v", slices.Sorted(maps.Keys(r.seen)))
	}
	if want := map[string]string{job6: web6, job7: web7, job12: "a-web-12-old"}; !maps.Equal(r.claimed, want) {
		t.Errorf("claimed: got %v, want %v", r.claimed, want)
	}
	if got, want := allocIDs(r.warm), append([]string{web1, web2, web3, web4, web5, web8, rdy2}, many...); !sameSet(got, want) {
		t.Errorf("warm: got %v, want %v", got, want)
	}
	if got, want := slices.Collect(maps.Keys(r.keepPrepared)), append([]string{web1, web2, web3, web4, web5, web8, web10, rdy1, rdy2, rdy3, gone1}, many...); !sameSet(got, want) {
		t.Errorf("keepPrepared: got %v, want %v", got, want)
	}
	if got, want := slices.Collect(maps.Keys(r.tracked)), []string{rdy1, rdy2, rdy3}; !sameSet(got, want) {
		t.Errorf("tracked: got %v, want %v", got, want)
	}
}

func allocIDs(ins []*instance) []string {
	out := make([]string, len(ins))
	for i, in := range ins {
		out[i] = in.allocID
	}
	return out
}

func sameSet(a, b []string) bool {
	return slices.Equal(slices.Sorted(slices.Values(a)), slices.Sorted(slices.Values(b)))
}
