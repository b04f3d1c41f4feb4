package pool

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/nomad/api"
)

// AllocDone waits until the warm (claimed) allocation allocID stops running
// and says why. It reads the inventory, which the Manager keeps with one
// blocking query for all of the node's warm allocations: a running task costs
// no connection to Nomad of its own. (Nomad limits each client address to 100
// concurrent HTTP connections by default; a blocking query per task would reach
// that at about 100 running tasks.) Only once the allocation has left the live
// list does it ask Nomad, once, for the precise reason. It returns ctx's error
// when ctx ends first, and ErrStopped (wrapped) when the Manager stops.
func (m *Manager) AllocDone(ctx context.Context, allocID string) (string, error) {
	mctx, err := m.running()
	if err != nil {
		return "", fmt.Errorf("watch allocation %s: %w", allocID, err)
	}
	for {
		m.mu.Lock()
		a := m.liveAllocLocked(allocID)
		current := m.watchErr["allocations"] == nil
		changed := m.changed
		m.mu.Unlock()
		switch {
		case a != nil && a.DesiredStatus != api.AllocDesiredStatusRun:
			return "allocation desired status is " + a.DesiredStatus, nil
		case a == nil && current:
			return m.whyNotLive(ctx, allocID), nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return "", ctx.Err()
		case <-mctx.Done():
			return "", fmt.Errorf("watch allocation %s: %w", allocID, ErrStopped)
		}
	}
}

// liveAllocLocked finds allocID among the live allocations of the inventory.
func (m *Manager) liveAllocLocked(allocID string) *api.AllocationListStub {
	for _, allocs := range m.inv.allocs {
		for _, a := range allocs {
			if a.ID == allocID {
				return a
			}
		}
	}
	return nil
}

// whyNotLive says why an allocation left the live list, asking Nomad once;
// when Nomad cannot say, it says what the list shows.
func (m *Manager) whyNotLive(ctx context.Context, allocID string) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	a, err := m.readAlloc(ctx, allocID)
	switch {
	case isNotFound(err):
		return "allocation no longer exists"
	case err != nil:
		return "allocation is no longer running"
	}
	return "allocation is " + a.ClientStatus
}

// readAlloc reads an allocation of the pool's namespace, retrying where safe.
func (m *Manager) readAlloc(ctx context.Context, allocID string) (*api.Allocation, error) {
	var a *api.Allocation
	err := call(ctx, retryAttempts, func(ctx context.Context) error {
		var err error
		a, _, err = m.client.Allocations().Info(allocID, m.queryOpts(ctx, m.namespace))
		return err
	})
	return a, err
}
