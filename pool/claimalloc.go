package pool

import (
	"context"
	"slices"
)

// ClaimAlloc is Claim for a caller that was given one warm allocation (the
// scheduler reserved it for the task, see package device): it hands out
// allocID when it is a warm, unclaimed allocation of pool on this node, and
// otherwise goes the way Claim goes (another warm one, or a miss that
// dispatches and waits), so a sandbox gone meanwhile costs a claim, never a
// failure. The claim counts toward the pool's demand once, as Claim's does.
// Whether allocID was had is the returned claim's AllocID.
func (m *Manager) ClaimAlloc(ctx context.Context, pool, allocID string, owner Owner) (*Claim, error) {
	return m.claim(ctx, pool, owner, allocID)
}

// takeWanted removes want from p's candidates and returns it, or returns
// nil when it is not one.
func takeWanted(p *pool, want string) *instance {
	if want == "" {
		return nil
	}
	i := slices.IndexFunc(p.view.candidates, func(in *instance) bool { return in.allocID == want })
	if i < 0 {
		return nil
	}
	in := p.view.candidates[i]
	// A new slice: the view's may be read elsewhere under the same lock.
	p.view.candidates = append(p.view.candidates[:i:i], p.view.candidates[i+1:]...)
	return in
}
