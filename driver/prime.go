package driver

import (
	"context"
	"time"

	"github.com/agentkernel/agentkernel-pool/pool"
)

const (
	// primeTimeout bounds one priming exec.
	primeTimeout = 30 * time.Second
	// primeAttempts bounds how often one warm allocation is tried.
	primeAttempts = 3
	// primeRescan looks at the warm allocations even without a change signal.
	primeRescan = 5 * time.Second
)

// primeLoop prepares every warm allocation's launch path ahead of its claim, so
// StartTask on the warm path makes no exec call (one exec into an isolated
// sandbox costs tens of milliseconds). Priming is an optimisation only: a start
// in an unprimed sandbox falls back to launching through exec.
func (d *Driver) primeLoop(ctx context.Context, p Pool, prime func(context.Context, pool.WarmAlloc) error) {
	tries := map[string]int{} // alloc id -> attempts; 0 after success is kept as -1
	for {
		_, _, changed := d.health.get()
		seen := map[string]bool{}
		for _, w := range p.Warm() {
			seen[w.AllocID] = true
			n := tries[w.AllocID]
			if n < 0 || n >= primeAttempts {
				continue
			}
			pctx, cancel := context.WithTimeout(ctx, primeTimeout)
			err := prime(pctx, w)
			cancel()
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				tries[w.AllocID] = n + 1
				d.logger.Warn("priming warm sandbox failed; its start will launch through exec", "pool", w.Pool, "alloc_id", w.AllocID, "attempt", n+1, "error", err)
				continue
			}
			tries[w.AllocID] = -1
		}
		for id := range tries { // claimed or gone: forget it
			if !seen[id] {
				delete(tries, id)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-time.After(primeRescan):
		}
	}
}
