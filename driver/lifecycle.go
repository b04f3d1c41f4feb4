package driver

import (
	"context"
	"fmt"
	"time"

	"github.com/agentkernel/agentkernel-pool/driver/sandbox"
	"github.com/agentkernel/agentkernel-pool/driver/shipper"
	"github.com/agentkernel/agentkernel-pool/plugin"
)

// defaultKillSignal is sent when the task sets no kill_signal.
const defaultKillSignal = "SIGTERM"

// WaitTask implements plugin.Driver.
func (d *Driver) WaitTask(ctx context.Context, taskID string) (*plugin.ExitResult, error) {
	h, err := d.task(taskID)
	if err != nil {
		return nil, err
	}
	select {
	case <-h.done:
		r, _ := h.result()
		return r, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// StopTask implements plugin.Driver: the kill signal first, SIGKILL after timeout.
func (d *Driver) StopTask(ctx context.Context, taskID string, timeout time.Duration, signal string) error {
	h, err := d.task(taskID)
	if err != nil {
		return nil // nothing to stop
	}
	h.mu.Lock()
	h.stopping = true
	h.mu.Unlock()
	if !h.state.Command {
		// What an exec left running goes first (end.go), then the copy back.
		if err := d.endSandboxNow(h); err != nil {
			h.setExit(plugin.ExitResult{ExitCode: 1, Err: err.Error()})
			return nil
		}
		d.copyOut(h) // before the sandbox is purged
		h.setExit(plugin.ExitResult{})
		return nil
	}
	select {
	case <-h.done:
		return nil
	default:
	}
	_, b, err := d.current()
	if err != nil {
		return fmt.Errorf("stop task %q: %w", taskID, err)
	}
	if signal == "" {
		signal = defaultKillSignal
	}
	ref := h.state.ref()
	sctx, cancel := context.WithTimeout(ctx, apiCallTimeout)
	err = b.Signal(sctx, ref, h.state.RunID, signal)
	cancel()
	if err != nil {
		d.logger.Warn("kill signal not delivered; killing", "task_id", taskID, "signal", signal, "error", err)
	} else {
		select {
		case <-h.done:
			return nil
		case <-time.After(timeout):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	sctx, cancel = context.WithTimeout(ctx, apiCallTimeout)
	err = b.Signal(sctx, ref, h.state.RunID, "SIGKILL")
	cancel()
	if err != nil {
		return fmt.Errorf("kill command of task %q in sandbox %s: %w", taskID, short(ref.AllocID), err)
	}
	select {
	case <-h.done:
		return nil
	case <-time.After(killGrace):
		return fmt.Errorf("command of task %q in sandbox %s did not exit after SIGKILL", taskID, short(ref.AllocID))
	case <-ctx.Done():
		return ctx.Err()
	}
}

// DestroyTask implements plugin.Driver: the claimed sandbox is purged, never reused.
func (d *Driver) DestroyTask(ctx context.Context, taskID string, force bool) error {
	h, ok := d.tasks.get(taskID)
	if !ok {
		return nil
	}
	select {
	case <-h.done:
	default:
		if !force {
			return fmt.Errorf("task %q is still running; stop it first or destroy with force", taskID)
		}
	}
	h.cancel()
	// A task destroyed without a stop, or while its command runs: its
	// sandbox's processes go before anything else (end.go).
	endErr := d.endSandboxNow(h)
	if !h.state.Command && endErr == nil {
		d.copyOut(h) // an idle task destroyed without a stop
	}
	shipper.Stop(h.shipJob())
	if n := sandbox.Reap(h.state.ref(), h.state.RunID); n > 0 {
		d.logger.Info("killed what was left of the task's command", "task_id", taskID, "processes", n)
	}
	claim := h.state.Claim
	_, p, err := d.currentPool()
	if err != nil {
		// Never block here (Nomad may be starting); reconcile purges sandboxes whose
		// owner is gone.
		return fmt.Errorf("release sandbox %s of task %q: %w (reconcile will purge it)", short(claim.AllocID), taskID, err)
	}
	rctx, cancel := context.WithTimeout(ctx, apiCallTimeout)
	defer cancel()
	if err := p.Release(rctx, h.poolClaim()); err != nil {
		return fmt.Errorf("release sandbox %s of task %q: %w", short(claim.AllocID), taskID, err)
	}
	h.setExit(plugin.ExitResult{ExitCode: 0, Signal: 9})
	d.tasks.delete(taskID)
	d.emit(h.cfg, fmt.Sprintf("Released sandbox %s (purged)", short(claim.AllocID)), map[string]string{"pool": claim.Pool, "sandbox_alloc_id": claim.AllocID})
	return nil
}

// InspectTask implements plugin.Driver.
func (d *Driver) InspectTask(_ context.Context, taskID string) (*plugin.TaskStatus, error) {
	h, err := d.task(taskID)
	if err != nil {
		return nil, err
	}
	st := &plugin.TaskStatus{
		ID: h.cfg.ID, Name: h.cfg.Name, State: plugin.TaskStateRunning, StartedAt: h.state.StartedAt,
		Attributes: map[string]string{"pool": h.state.Claim.Pool, "sandbox_alloc_id": h.state.Claim.AllocID},
	}
	if r, at := h.result(); r != nil {
		st.State, st.CompletedAt, st.ExitResult = plugin.TaskStateExited, at, r
	}
	return st, nil
}

// SignalTask implements plugin.Driver.
func (d *Driver) SignalTask(ctx context.Context, taskID string, signal string) error {
	h, b, err := d.taskAndBackend(taskID)
	if err != nil {
		return err
	}
	if !h.state.Command {
		return fmt.Errorf("task %q runs no command (it holds its sandbox); signal the command you exec'd instead", taskID)
	}
	d.refreshFiles(h) // a template re-rendered for this signal is there first
	sctx, cancel := context.WithTimeout(ctx, apiCallTimeout)
	defer cancel()
	if err := b.Signal(sctx, h.state.ref(), h.state.RunID, signal); err != nil {
		return fmt.Errorf("signal %s to task %q: %w", signal, taskID, err)
	}
	return nil
}

// TaskStats implements plugin.Driver: the claimed allocation's usage as Nomad
// reports it. When none is available the stream stays open and quiet.
func (d *Driver) TaskStats(ctx context.Context, taskID string, interval time.Duration) (<-chan *plugin.TaskResourceUsage, error) {
	h, err := d.task(taskID)
	if err != nil {
		return nil, err
	}
	if interval <= 0 {
		interval = defaultStatsInterval
	}
	ch := make(chan *plugin.TaskResourceUsage)
	go func() {
		defer close(ch)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-h.done:
				<-ctx.Done()
				return
			case <-t.C:
			}
			_, b, err := d.current()
			if err != nil {
				continue
			}
			ref := h.state.ref()
			uctx, cancel := context.WithTimeout(ctx, apiCallTimeout)
			u, err := b.Usage(uctx, ref.Namespace, ref.AllocID, ref.Task)
			cancel()
			if err != nil || u == nil {
				continue
			}
			select {
			case ch <- u:
			case <-ctx.Done():
				return
			}
		}
	}()
	return ch, nil
}
