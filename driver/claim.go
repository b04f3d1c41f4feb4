package driver

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/agentkernel/agentkernel-pool/driver/sandbox"
	"github.com/agentkernel/agentkernel-pool/plugin"
	"github.com/agentkernel/agentkernel-pool/pool"
)

// A warm start does not wait for its claim's record (pool write-behind,
// pool/record.go): StartTask launches the command once the pool reserved the
// sandbox, and the record is written meanwhile. What a restarted plugin finds
// meanwhile is the hand-out mark StartTask leaves on the host, outside
// anything the sandbox sees (sandbox.Ref.Mark): Prepare reports the sandbox
// in use (handOutCheck), so it is never handed out again, until the task,
// recovered, adopts its claim.

// keepClaim makes sure the task's claim is on record while the task runs: it
// waits for a record written behind the claim, and adopts a recovered task's
// claim (the plugin before may have ended between hand-out and record). A
// record that cannot be written is tried again, backing off, as long as the
// task runs; the command runs on meanwhile, since this process holds the
// claim. A sandbox another claimer's record holds is not the task's: its
// command is stopped and the task fails, recoverably.
func (d *Driver) keepClaim(ctx context.Context, h *taskHandle, b Backend) {
	var err error
	if h.claim != nil {
		crashBeforeRecord()
		if err = h.claim.Wait(ctx); err == nil || ctx.Err() != nil {
			return
		}
	}
	for attempt := 0; ctx.Err() == nil; attempt++ {
		if errors.Is(err, pool.ErrClaimLost) {
			d.claimLost(ctx, h, b, err)
			return
		}
		if err != nil {
			d.logger.Warn("claim of a running task not on record; trying again", "task_id", h.cfg.ID,
				"sandbox_alloc_id", h.state.Claim.AllocID, "error", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(min(keepClaimFirst<<min(attempt, 5), keepClaimMax)):
			}
		}
		if err = d.adopt(ctx, h); err == nil {
			return
		}
	}
}

// adopt puts a task's claim on record through the current pool manager.
func (d *Driver) adopt(ctx context.Context, h *taskHandle) error {
	_, p, err := d.currentPool()
	if err != nil {
		return err
	}
	actx, cancel := context.WithTimeout(ctx, apiCallTimeout)
	defer cancel()
	return p.Adopt(actx, h.poolClaim())
}

// claimLost ends a task whose sandbox another claimer holds.
func (d *Driver) claimLost(ctx context.Context, h *taskHandle, b Backend, err error) {
	ref := h.state.ref()
	msg := fmt.Sprintf("Sandbox %s is claimed by another task: the command was stopped (%v)", short(ref.AllocID), err)
	h.mu.Lock()
	// The sandbox's other processes are another claimer's: never ended for
	// this task (end.go). Its tree is another's too: nothing is copied back,
	// and the exit the killed command reports carries this reason.
	h.ending, h.endErr, h.filesOut = true, errors.New(msg), true
	h.mu.Unlock()
	d.logger.Error("sandbox claimed by someone else; stopping the task's command", "task_id", h.cfg.ID, "sandbox_alloc_id", ref.AllocID, "error", err)
	if h.state.Command {
		sctx, cancel := context.WithTimeout(ctx, apiCallTimeout)
		if serr := b.Signal(sctx, ref, h.state.RunID, "SIGKILL"); serr != nil {
			d.logger.Error("stop the command in a sandbox claimed by someone else", "task_id", h.cfg.ID, "error", serr)
		}
		cancel()
	}
	d.emit(h.cfg, msg, map[string]string{"sandbox_alloc_id": ref.AllocID})
	h.setExit(plugin.ExitResult{ExitCode: 1, Err: msg})
}

// poolClaim is the task's claim for the pool: the one StartTask got, or, for
// a recovered task, the one its handle kept.
func (h *taskHandle) poolClaim() *pool.Claim {
	if h.claim != nil {
		return h.claim
	}
	return h.state.Claim.claim()
}

// handOutCheck is Prepare's first look at a warm sandbox: one that was ever
// handed out is in use (pool.ErrInUse: never handed out again, and retired
// unless its claimer adopts it). The hand-out mark decides, and a run dir in
// the sandbox counts too, though its command can hide that one. A sandbox
// whose mark cannot be proven absent, or whose run dirs cannot be read, is
// retired (pool.ErrUnpreparable): it is never handed out on a guess.
func handOutCheck(ref sandbox.Ref) error {
	marked, err := ref.Marked()
	if err != nil {
		return fmt.Errorf("%w: %w", pool.ErrUnpreparable, err)
	}
	if marked {
		return fmt.Errorf("%w: sandbox %s: %w", pool.ErrInUse, ref.AllocID, sandbox.ErrMarked)
	}
	used, err := ref.Used()
	if err != nil {
		return fmt.Errorf("%w: look for runs in sandbox %s: %w", pool.ErrUnpreparable, ref.AllocID, err)
	}
	if used {
		return fmt.Errorf("%w: a run was started in sandbox %s", pool.ErrInUse, ref.AllocID)
	}
	return nil
}
