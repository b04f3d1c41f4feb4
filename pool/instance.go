package pool

import (
	"strings"
	"time"

	"github.com/hashicorp/nomad/api"
)

// What one warm instance is, told from Nomad's lists alone: the same rules
// serve the Manager's inventory and Status.

// state is what a warm instance (one dispatched child job) is doing.
type state uint8

const (
	stateStarting state = iota // dispatched, allocation pending or task not yet running
	stateWarm                  // allocation and task running, unclaimed
	stateClaimed               // has a claim record
	stateFailed                // died unclaimed (or its job is dead); to be purged
)

func (s state) String() string {
	return [...]string{"starting", "warm", "claimed", "failed"}[s]
}

// instance is one dispatched child of a pool's template job.
type instance struct {
	pool      string
	node      string
	jobID     string
	allocID   string // the live (or claimed) allocation; empty while none
	task      string
	hash      string // template hash the child was dispatched from
	state     state
	submitted time.Time
	// unprepared: the task runs, but Prepare has not succeeded for it yet
	// (Options.Prepare); it counts as starting.
	unprepared bool
	// preparing: running and prepared, but its readiness check has not
	// passed yet (ready.go); it counts as preparing.
	preparing bool
	// unplaced: starting, and the scheduler found no place for it (its
	// evaluation is blocked); see failure.go. summaryIndex is the index of
	// the job summary that says so.
	unplaced     bool
	summaryIndex uint64
	// dispatcher is the Manager instance that dispatched it (its warm-up
	// is measured only then: observer.go).
	dispatcher string
}

// parseJobID splits an agentkernel-pool job ID into pool and node prefix;
// child reports whether it is a dispatched child. ok is false for other jobs.
func parseJobID(id string) (pool, node8 string, child, ok bool) {
	parent, _, child := strings.Cut(id, dispatchSep)
	rest, found := strings.CutPrefix(parent, jobPrefix)
	i := strings.LastIndexByte(rest, '-')
	if !found || i < 1 || len(rest)-i-1 != 8 {
		return "", "", false, false
	}
	return rest[:i], rest[i+1:], child, true
}

// ClaimPath is the variable path of the claim record of a sandbox allocation.
func ClaimPath(pool, allocID string) string {
	return claimRoot + pool + "/claims/" + allocID
}

// parseClaimPath is ClaimPath reversed.
func parseClaimPath(path string) (pool, allocID string, ok bool) {
	rest, found := strings.CutPrefix(path, claimRoot)
	pool, allocID, found2 := strings.Cut(rest, "/claims/")
	if !found || !found2 || pool == "" || allocID == "" || strings.Contains(allocID, "/") {
		return "", "", false
	}
	return pool, allocID, true
}

func isLive(a *api.AllocationListStub) bool {
	switch a.ClientStatus {
	case api.AllocClientStatusPending, api.AllocClientStatusRunning, api.AllocClientStatusUnknown:
		return true
	}
	return false
}

// classify works out the state of one child job from its live allocations
// and the claim records.
func classify(j *api.JobListStub, allocs []*api.AllocationListStub, claims map[string]claimRef) *instance {
	pool, _, _, _ := parseJobID(j.ID)
	if p := j.Meta[metaPool]; p != "" {
		pool = p
	}
	in := &instance{
		pool:      pool,
		node:      j.Meta[metaNode],
		jobID:     j.ID,
		task:      j.Meta[metaTask],
		hash:      j.Meta[metaHash],
		submitted: time.Unix(0, j.SubmitTime),
	}
	in.dispatcher = j.Meta[metaDispatcher]
	var live *api.AllocationListStub
	for _, a := range allocs {
		if _, ok := claims[a.ID]; ok {
			in.state, in.allocID = stateClaimed, a.ID
			return in
		}
		if a.DesiredStatus == api.AllocDesiredStatusRun && isLive(a) && (live == nil || a.CreateIndex > live.CreateIndex) {
			live = a
		}
	}
	switch {
	case j.Stop || j.Status == "dead":
		in.state = stateFailed
	case live == nil && len(allocs) > 0:
		in.state = stateFailed // only stopping allocations left
	case live == nil:
		in.state = stateStarting
		in.unplaced = len(allocs) == 0 && queued(j) > 0
		if in.unplaced {
			in.summaryIndex = j.JobSummary.ModifyIndex
		}
	default:
		in.allocID = live.ID
		in.state = stateStarting
		if live.ClientStatus == api.AllocClientStatusRunning && taskRunning(live, in.task) {
			in.state = stateWarm
		}
	}
	return in
}

// keepClaimed keeps an instance claimed while its claim lasts, though its
// allocation has left the live list: the claimer's task ended it (the driver
// ends every process of a sandbox when its task exits, the warm task's own
// included) or it died under the claimer. It is the claimer's to release,
// not a warm instance that died unclaimed: no failure of the template, and
// no purge behind the claimer's back. Only what this process saw claimed
// (claimedJobs: job ID to its claimed allocation) is known: after a restart
// such an instance counts as died unclaimed once, and reconcile removes its
// claim.
func keepClaimed(in *instance, claims map[string]claimRef, claimedJobs map[string]string) *instance {
	if in.state == stateClaimed {
		return in
	}
	if allocID, ok := claimedJobs[in.jobID]; ok {
		if _, claimed := claims[allocID]; claimed {
			in.state, in.allocID = stateClaimed, allocID
		}
	}
	return in
}

// queued is how many allocations of j the scheduler could not place yet.
func queued(j *api.JobListStub) int {
	n := 0
	if j.JobSummary != nil {
		for _, tg := range j.JobSummary.Summary {
			n += tg.Queued
		}
	}
	return n
}

// taskRunning reports whether the warm task of a is running. Without a known
// task name every task must run.
func taskRunning(a *api.AllocationListStub, task string) bool {
	if task != "" {
		ts := a.TaskStates[task]
		return ts != nil && ts.State == "running"
	}
	if len(a.TaskStates) == 0 {
		return false
	}
	for _, ts := range a.TaskStates {
		if ts == nil || ts.State != "running" {
			return false
		}
	}
	return true
}
