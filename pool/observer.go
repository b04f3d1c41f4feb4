package pool

import "time"

// Observer is told of what the Manager does, as it happens, for metrics
// (Options.Observer). Calls come from the Manager's goroutines, some while
// it holds its lock: they must return quickly and must not call the Manager.
type Observer interface {
	// WarmedUp: an instance this Manager dispatched turned warm, took
	// after its dispatch.
	WarmedUp(pool string, took time.Duration)
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
	if m.observer != nil {
		m.observer.WarmedUp(p.cfg.Name, took)
	}
}
