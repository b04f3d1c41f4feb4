package pool

import (
	"context"
	"time"
)

// A start that claimed a sandbox but never launched in it (the plugin died
// between the two) leaves a claim whose owner allocation still runs. Nomad
// then starts the task again, and that start claims another sandbox. Nomad
// never runs two instances of one allocation's task at once, and it destroys
// a task's handle before it starts the task anew, so of the claims held by
// one owner allocation and task only the newest is in use: the older ones
// are superseded, and freed (purge and claim delete) as soon as the newer
// claim is made, or by reconcile.

const whySuperseded = "superseded by a newer claim of the same owner task (a start that never launched)"

// ownerKey identifies the task that holds a claim.
type ownerKey struct{ alloc, task string }

// ownerKeyOf returns the key of a claim made for a task (reason "claim",
// owner allocation and task known), or false.
func ownerKeyOf(rec *claimRecord) (ownerKey, bool) {
	if rec == nil || rec.foreign || rec.reason != reasonClaim || rec.claim.Owner.AllocID == "" || rec.claim.Owner.TaskName == "" {
		return ownerKey{}, false
	}
	return ownerKey{rec.claim.Owner.AllocID, rec.claim.Owner.TaskName}, true
}

// newestClaims returns, per owner task, the time of its newest claim.
func newestClaims(recs []*claimRecord) map[ownerKey]time.Time {
	newest := map[ownerKey]time.Time{}
	for _, rec := range recs {
		if k, ok := ownerKeyOf(rec); ok && rec.claim.ClaimedAt.After(newest[k]) {
			newest[k] = rec.claim.ClaimedAt
		}
	}
	return newest
}

// superseded reports whether a newer claim of the same owner task exists.
func superseded(rec *claimRecord, newest map[ownerKey]time.Time) bool {
	k, ok := ownerKeyOf(rec)
	return ok && rec.claim.ClaimedAt.Before(newest[k])
}

// releaseSuperseded frees, in the background, the claims this Manager knows
// of that a claim by owner made at t supersedes (keep is that claim's
// allocation, "" before it is made). It reads nothing from Nomad: records not
// yet cached are left to reconcile. Claim calls it as it begins, so the slot
// an orphaned claim holds within max is free for the new claim, and again
// once it has its claim.
func (m *Manager) releaseSuperseded(owner Owner, keep string, t time.Time) {
	if owner.AllocID == "" || owner.TaskName == "" {
		return
	}
	newest := map[ownerKey]time.Time{{owner.AllocID, owner.TaskName}: t}
	var stale []*Claim
	m.mu.Lock()
	for _, rec := range m.claimCache {
		if id := rec.claim.AllocID; id != keep && !m.freeing[id] && superseded(rec, newest) {
			m.freeing[id] = true
			stale = append(stale, rec.claim)
		}
	}
	m.mu.Unlock()
	if len(stale) == 0 {
		return
	}
	m.goFn(func() {
		ctx, cancel := context.WithTimeout(m.ctx, cleanupTimeout)
		defer cancel()
		for _, s := range stale {
			err := m.removeClaimed(ctx, s.Pool, s.JobID, s.AllocID)
			m.mu.Lock()
			delete(m.freeing, s.AllocID)
			m.mu.Unlock()
			if err != nil {
				m.log.Error("cannot free superseded claim; reconcile will retry", "pool", s.Pool, "alloc_id", s.AllocID, "error", err)
				continue
			}
			m.log.Info("freed superseded claim", "pool", s.Pool, "alloc_id", s.AllocID, "job_id", s.JobID,
				"owner_alloc_id", s.Owner.AllocID, "owner_task", s.Owner.TaskName, "why", whySuperseded)
		}
	})
}
