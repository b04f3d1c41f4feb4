package driver

import (
	"context"
	"errors"
	"fmt"

	"github.com/agentkernel/agentkernel-pool/driver/allocfs"
	"github.com/agentkernel/agentkernel-pool/driver/sandbox"
	"github.com/agentkernel/agentkernel-pool/plugin"
)

// track registers a task and follows it until it exits or the plugin stops.
// started, when not nil, delivers the outcome of the command's start (the
// launch session's answer, which StartTask does not wait for).
func (d *Driver) track(h *taskHandle, started <-chan error) {
	ctx, cancel := context.WithCancel(d.ctx)
	h.cancel = cancel
	d.tasks.set(h.cfg.ID, h)
	if h.state.Files {
		d.files.add(h)
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		defer d.files.remove(h.cfg.ID)
		d.watch(ctx, h, started)
	}()
	d.startWatchdog()
}

// watch sets the task's exit result from its command, or from the death of its
// sandbox allocation, whichever comes first. A recovered task waits here for a
// backend while there is none (plugin config unusable); its command runs on.
func (d *Driver) watch(ctx context.Context, h *taskHandle, started <-chan error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ref := h.state.ref()
	if started != nil {
		// Following starts once the command has (the run's files are
		// there from its first byte, so nothing is missed meanwhile).
		h.setStep(stepLaunch)
		select {
		case err := <-started:
			if err != nil {
				// The command never started: the task fails with the
				// reason (and is started again per its restart policy).
				d.emit(h.cfg, upperFirst(err.Error()), map[string]string{"sandbox_alloc_id": ref.AllocID})
				d.endSandboxNow(h)
				h.setExit(plugin.ExitResult{ExitCode: 1, Err: err.Error()})
				return
			}
		case <-ctx.Done():
			return
		}
	}
	h.setStep(stepBackend)
	b, err := d.waitBackend(ctx, nil)
	if err != nil {
		return // plugin shutting down or task destroyed: the command lives on
	}
	// A sandbox that dies cuts the shipping short: see sandboxDied.
	shipCtx, cutShipping := context.WithCancel(ctx)
	defer cutShipping()
	shipped := make(chan bool, 1) // true: Ship saw the run's end, and its exit is reported below
	d.wg.Add(2)
	go func() {
		defer d.wg.Done()
		d.keepClaim(ctx, h, b)
	}()
	go func() {
		defer d.wg.Done()
		reason, err := d.allocDone(ctx, b, ref)
		if err != nil {
			return
		}
		h.mu.Lock()
		ending := h.ending
		h.mu.Unlock()
		if ending {
			return // the plugin ended the sandbox; the exit is reported there
		}
		d.sandboxDied(h, reason, cutShipping, shipped)
	}()
	if !h.state.Command {
		// The task holds its sandbox until stopped or until the sandbox dies.
		h.setStep(stepHold)
		select {
		case <-ctx.Done():
		case <-h.done:
		}
		return
	}
	h.setStep(stepShip)
	st, err := b.Ship(shipCtx, h.shipJob())
	cut := err != nil && shipCtx.Err() != nil
	shipped <- !cut
	if ctx.Err() != nil {
		return // plugin shutting down or task destroyed: the command lives on
	}
	if cut {
		return // the sandbox died: sandboxDied reports the exit
	}
	// Nothing of the sandbox runs on once the exit is reported (end.go).
	endErr := d.endSandbox(h, b)
	if errors.Is(err, allocfs.ErrTampered) {
		d.tampered(h, err)
		return
	}
	if err != nil {
		h.setExit(plugin.ExitResult{ExitCode: 1, Err: fmt.Sprintf("follow command in sandbox %s: %v", short(ref.AllocID), err)})
		return
	}
	if endErr != nil {
		h.setExit(plugin.ExitResult{ExitCode: max(st.Code, 1), Signal: st.Signal, Err: endErr.Error()})
		return
	}
	h.setStep(stepResults)
	d.copyOut(h) // before the exit is reported: poststop tasks read the results
	h.setExit(plugin.ExitResult{ExitCode: st.Code, Signal: st.Signal})
}

// tampered ends a task whose command rewrote the plugin's files to reach the
// host: nothing it planted was read; the task fails saying so, and Destroy
// purges the sandbox.
func (d *Driver) tampered(h *taskHandle, err error) {
	ref := h.state.ref()
	d.logger.Warn("sandbox tampered with its run files; ending the task", "task_id", h.cfg.ID, "sandbox_alloc_id", ref.AllocID, "error", err)
	d.emit(h.cfg, upperFirst(err.Error()), map[string]string{"sandbox_alloc_id": ref.AllocID})
	h.setExit(plugin.ExitResult{ExitCode: 1, Err: err.Error()})
}

// allocDone waits until the task's sandbox allocation stops and says why. A
// new token changes no backend; only a new plugin config replaces it, and then
// the wait moves to the new one.
func (d *Driver) allocDone(ctx context.Context, b Backend, ref sandbox.Ref) (string, error) {
	for {
		reason, err := b.AllocDone(ctx, ref.Namespace, ref.AllocID)
		if err == nil || ctx.Err() != nil {
			return reason, err
		}
		if b, err = d.waitBackend(ctx, b); err != nil {
			return "", err
		}
	}
}
