package pool

import (
	"fmt"
	"strings"
)

// Stats are one pool's counts, from the Manager's inventory.
type Stats struct {
	Size     int
	Max      int
	Target   int // warm + starting kept now: between Size and MaxWarm, following demand
	Warm     int // running, task running, unclaimed
	Starting int // dispatched (or being dispatched), not yet warm, not preparing
	// Preparing counts the allocations that run (launch session open) while
	// their template's readiness check has not passed yet (ready.go).
	Preparing int
	Claimed   int // has a claim record
	Failed    int // died unclaimed; being purged and replaced
	// PrepareFailures counts the allocations Options.Prepare failed for (and
	// that were replaced) since the Manager started.
	PrepareFailures int `json:",omitempty"`
	// ReadyFailures counts the allocations replaced since the Manager
	// started because they were not ready in time or stopped being ready.
	ReadyFailures int `json:",omitempty"`
	// Error says why the pool cannot work as configured (bad config or
	// template) or why its template fails (Nomad's reason: the failed
	// task's event, or why the scheduler cannot place it; see failure.go),
	// empty when it is fine.
	Error string `json:",omitempty"`
}

// Stats returns every pool's counts. It reads memory only.
func (m *Manager) Stats() map[string]Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]Stats, len(m.pools))
	for name, p := range m.pools {
		out[name] = p.stats()
	}
	return out
}

func (p *pool) stats() Stats {
	s := p.view.counts
	s.Size, s.Max, s.Target, s.PrepareFailures, s.ReadyFailures = p.cfg.Size, p.cfg.Max, p.target, p.prepFail, p.readyFail
	var errs []string
	if p.err != nil {
		errs = append(errs, p.err.Error())
	}
	if why := p.failing(); why != "" {
		errs = append(errs, fmt.Sprintf("pool %q is failing: %s", p.cfg.Name, why))
	} else if p.readyErr != "" {
		errs = append(errs, p.readyErr)
	}
	s.Error = strings.Join(errs, "; ")
	return s
}
