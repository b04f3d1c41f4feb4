package driver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/agentkernel/agentkernel-pool/plugin"
	"github.com/agentkernel/agentkernel-pool/pool"
)

// RecoverTask implements plugin.Driver: re-attach to a task from its handle alone.
// A task whose sandbox is gone is an error, so Nomad restarts the task.
func (d *Driver) RecoverTask(ctx context.Context, th *plugin.TaskHandle) error {
	if th == nil || th.Config == nil {
		return errors.New("recover task: handle without task config")
	}
	if _, ok := d.tasks.get(th.Config.ID); ok {
		return nil // same process: still tracked
	}
	if th.Version != stateVersion {
		return fmt.Errorf("recover task %q: driver state version %d, want %d", th.Config.ID, th.Version, stateVersion)
	}
	var st driverState
	if err := json.Unmarshal(th.DriverState, &st); err != nil {
		return fmt.Errorf("recover task %q: decode driver state: %w", th.Config.ID, err)
	}
	_, b, err := d.waitBackend(ctx, backendWait)
	if err != nil {
		return fmt.Errorf("recover task %q: %w", th.Config.ID, err)
	}
	gctx, cancel := context.WithTimeout(ctx, apiCallTimeout)
	defer cancel()
	if _, err := b.Pool.Get(gctx, st.Claim.Pool, st.Claim.AllocID); err != nil {
		if errors.Is(err, pool.ErrNotFound) {
			return fmt.Errorf("recover task %q: claim on sandbox %s is gone", th.Config.ID, short(st.Claim.AllocID))
		}
		return fmt.Errorf("recover task %q: read claim on sandbox %s: %w", th.Config.ID, short(st.Claim.AllocID), err)
	}
	h := &taskHandle{cfg: th.Config, state: st, done: make(chan struct{})}
	d.track(h, b, loadOffsets(st.OffsetsPath))
	d.logger.Info("recovered task", "task_id", th.Config.ID, "sandbox_alloc_id", st.Claim.AllocID)
	return nil
}

// waitBackend waits up to limit for the backend of a plugin that is still starting.
func (d *Driver) waitBackend(ctx context.Context, limit time.Duration) (*Config, *Backend, error) {
	deadline := time.Now().Add(limit)
	for {
		cfg, b, err := d.current()
		if err == nil || !errors.Is(err, errNotReady) || time.Now().After(deadline) {
			return cfg, b, err
		}
		select {
		case <-ctx.Done():
			return nil, nil, err
		case <-time.After(50 * time.Millisecond):
		}
	}
}
