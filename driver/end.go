package driver

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/agentkernel/agentkernel-pool/driver/sandbox"
)

// Nothing of a sandbox runs on after its task's exit is reported. A process
// the command left behind that holds a cwd or a directory descriptor in the
// mounted alloc/data keeps writing into the task's host alloc/data after the
// mount is detached, while poststop tasks read it; one in an exec'd session
// of an idle task likewise. So before the exit is reported (and before the
// unmount and the copy back) the sandbox's processes are ended: all of them,
// the warm task's own included, since the sandbox is single-use and purged
// on Destroy. Which are reached, per runtime, is sandbox.Runner.End's.
//
// Ending the warm task's process ends the sandbox allocation's task, which
// Nomad reports: the task's watcher does not take that for the sandbox
// stopped from outside (h.ending), and the pool keeps the allocation as
// claimed until the task's Destroy releases it.
//
// When they cannot all be ended (processes left after every round of
// SIGKILL, or the host cannot look), the task fails loudly: an event, an
// error in its exit result, nothing copied back, and its sandbox released
// at once, so Nomad stops it.

// endSandbox ends the task's sandbox's processes, once; the error says why
// they could not all be ended, and is the task's exit error.
func (d *Driver) endSandbox(h *taskHandle, b Backend) error {
	h.mu.Lock()
	if h.ending {
		h.mu.Unlock()
		return h.endErr
	}
	h.ending = true
	h.mu.Unlock()

	ref := h.state.ref()
	begin := time.Now()
	n, err := b.End(ref, h.state.RunID, h.state.NamespacePID)
	if h.state.FilesWay == filesMount {
		if uerr := h.unmountShared(); uerr != nil {
			d.logger.Warn("unmounting alloc/data from the sandbox failed", "task_id", h.cfg.ID, "sandbox_alloc_id", ref.AllocID, "error", uerr)
		}
	}
	if err == nil {
		if n > 0 {
			d.logger.Debug("ended the sandbox's processes", "task_id", h.cfg.ID, "sandbox_alloc_id", ref.AllocID, "processes", n, "took", time.Since(begin))
		}
		return nil
	}
	msg := fmt.Sprintf("Processes of sandbox %s could not all be ended before the exit (%v): the sandbox is stopped, results are not copied back", short(ref.AllocID), err)
	d.logger.Error("processes of the sandbox could not all be ended; stopping it", "task_id", h.cfg.ID, "sandbox_alloc_id", ref.AllocID, "error", err)
	d.emit(h.cfg, msg, map[string]string{"sandbox_alloc_id": ref.AllocID})
	h.mu.Lock()
	h.endErr, h.filesOut = errors.New(msg), true // no copy back: the tree still changes
	h.mu.Unlock()
	d.stopSandbox(h)
	return h.endErr
}

// endSandboxNow is endSandbox with the current backend; without one (the
// plugin not configured) only the run's process group can be ended.
func (d *Driver) endSandboxNow(h *taskHandle) error {
	_, b, err := d.current()
	if err != nil {
		sandbox.Reap(h.state.ref(), h.state.RunID)
		return nil
	}
	return d.endSandbox(h, b)
}

// stopSandbox releases the task's sandbox now (the pool purges it, and
// Nomad stops every process of it), not at Destroy.
func (d *Driver) stopSandbox(h *taskHandle) {
	_, p, err := d.currentPool()
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), apiCallTimeout)
		err = p.Release(ctx, h.poolClaim())
		cancel()
	}
	if err != nil {
		d.logger.Error("stop the sandbox whose processes could not all be ended", "task_id", h.cfg.ID, "sandbox_alloc_id", h.state.Claim.AllocID, "error", err)
	}
}
