package driver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/agentkernel/agentkernel-pool/driver/allocfs"
	"github.com/agentkernel/agentkernel-pool/plugin"
)

// RecoverTask implements plugin.Driver: re-attach to a task from its handle alone.
// It needs nothing else: no remote call (at agent start Nomad recovers tasks
// before its HTTP API listens), no valid plugin config, no token, no backend.
// It fails only when the task's run dir is gone from its sandbox, so Nomad
// restarts the task; a run dir the command replaced (tampering, found while
// no plugin watched) ends the task with the reason instead. The task's watcher waits for a backend (the config fixed,
// the API back) to report the exit and notice a sandbox that died.
func (d *Driver) RecoverTask(_ context.Context, th *plugin.TaskHandle) error {
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
	h := &taskHandle{cfg: th.Config, state: st, done: make(chan struct{})}
	if ok, err := st.ref().RunExists(st.RunID); errors.Is(err, allocfs.ErrTampered) {
		// The command rewrote the plugin's files while no plugin watched:
		// the task is recovered only to end it with the reason, as a
		// watching plugin would have (Destroy purges the sandbox).
		d.tampered(h, err)
		h.cancel = func() {}
		d.tasks.set(th.Config.ID, h)
		return nil
	} else if err != nil || !ok {
		if err == nil {
			err = errors.New("its run dir is not there")
		}
		return fmt.Errorf("recover task %q: sandbox %s is gone: %w", th.Config.ID, short(st.Claim.AllocID), err)
	}
	d.track(h, nil)
	d.logger.Info("recovered task", "task_id", th.Config.ID, "sandbox_alloc_id", st.Claim.AllocID)
	return nil
}

// waitPool waits up to limit for the pools of a plugin that is still starting.
func (d *Driver) waitPool(ctx context.Context, limit time.Duration) (*Config, Pool, error) {
	deadline := time.Now().Add(limit)
	for {
		cfg, p, err := d.currentPool()
		if err == nil || !errors.Is(err, errNotReady) || time.Now().After(deadline) {
			return cfg, p, err
		}
		select {
		case <-ctx.Done():
			return nil, nil, err
		case <-time.After(poolPollEvery):
		}
	}
}
