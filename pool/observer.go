package pool

import (
	"time"

	"github.com/hashicorp/nomad/api"
)

// Observer is told of what the Manager does, as it happens, for metrics
// (Options.Observer). Calls come from the Manager's goroutines, some while
// it holds its lock: they must return quickly and must not call the Manager.
type Observer interface {
	// WarmedUp: an instance this Manager dispatched turned warm, took
	// after its dispatch.
	WarmedUp(pool string, took time.Duration)
	// Ready: an allocation's readiness check passed for the first time,
	// took after its warm task started (ready.go).
	Ready(pool string, took time.Duration)
	// Dispatched: a warm instance was dispatched, or failed to be (err).
	Dispatched(pool string, err error)
	// Purged: a warm or used instance (or a template) was purged, or
	// failed to be (err).
	Purged(pool string, err error)
}

// warmedUpLocked learns from an instance that just turned warm how long the
// pool takes to warm up. Only what this Manager dispatched counts: an
// instance adopted after a restart has been warm for an unknown while.
func (m *Manager) warmedUpLocked(p *pool, in *instance) {
	if in.dispatcher != m.instance || in.submitted.IsZero() {
		return
	}
	took := time.Since(in.submitted)
	if took <= 0 {
		return
	}
	p.demand.warmedUp(took)
	m.logWarmupLocked(in, took)
	if m.observer != nil {
		m.observer.WarmedUp(p.cfg.Name, took)
	}
}

// logWarmupLocked says at debug level where an instance's warm-up went, each
// step counted from its dispatch: placed (the allocation made), started (the
// client's Started event of the pool's task) and warm (seen running and
// prepared; the "prepared warm allocation" line says how long Prepare took).
func (m *Manager) logWarmupLocked(in *instance, took time.Duration) {
	if !m.log.IsDebug() {
		return
	}
	since := func(t time.Time) string {
		if t.IsZero() {
			return "unknown"
		}
		return t.Sub(in.submitted).Round(time.Millisecond).String()
	}
	var placed, started time.Time
	for _, a := range m.inv.allocs[in.jobID] {
		if a.ID != in.allocID {
			continue
		}
		placed = time.Unix(0, a.CreateTime)
		if ts := a.TaskStates[in.task]; ts != nil {
			for _, e := range ts.Events {
				if e.Type == api.TaskStarted {
					started = time.Unix(0, e.Time)
				}
			}
		}
	}
	m.log.Debug("warm instance warmed up", "pool", in.pool, "job_id", in.jobID, "alloc_id", in.allocID,
		"placed", since(placed), "started", since(started), "warm", took.Round(time.Millisecond).String())
}
