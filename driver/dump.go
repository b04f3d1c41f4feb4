package driver

import (
	"runtime"
	"time"

	"github.com/agentkernel/agentkernel-pool/driver/sandbox"
	"github.com/agentkernel/agentkernel-pool/driver/shipper"
)

// LogState logs, at info level, what the plugin knows of itself and of every
// task it tracks: one "plugin state" line (tasks, goroutines) and one "task
// state" line per task (taskDump). The binary runs it on SIGUSR1 (main.go),
// so an operator, or a soak test, can read why a task has not ended from one
// look at the agent's log. It makes no remote call.
func (d *Driver) LogState() {
	tasks := d.tasks.all()
	d.logger.Info("plugin state", "tasks", len(tasks), "goroutines", runtime.NumGoroutine())
	for _, h := range tasks {
		d.logger.Info("task state", d.taskDump(h)...)
	}
}

// taskDump is what the plugin knows of a task, as log key-value pairs: its
// claim and the claim's record, the step its watcher waits in, the launch
// still awaiting its outcome, the run's records read through the boundary,
// and its helpers' pids (alive, or 0) and shipped offsets.
func (d *Driver) taskDump(h *taskHandle) []any {
	st := h.state
	h.mu.Lock()
	step := h.step
	h.mu.Unlock()
	record := "recovered: adopted by keepClaim"
	if h.claim != nil {
		record = h.claim.RecordState()
	}
	kv := []any{"task_id", h.cfg.ID, "alloc_id", h.cfg.AllocID, "pool", st.Claim.Pool, "sandbox_alloc_id", st.Claim.AllocID,
		"hit", st.Claim.Hit, "claim_waited", st.Claim.Waited, "claim_record", record, "run_id", st.RunID,
		"files_way", st.FilesWay, "started_at", st.StartedAt.Format(time.RFC3339Nano), "step", step}
	if _, b, err := d.current(); err == nil {
		if launch, ok := b.LaunchState(st.Claim.AllocID); ok {
			kv = append(kv, "launch", launch)
		}
	}
	if r, at := h.result(); r != nil {
		kv = append(kv, "exit_code", r.ExitCode, "signal", r.Signal, "error", r.Err, "reported_at", at.Format(time.RFC3339Nano))
	}
	if st.Command {
		run := sandbox.Inspect(st.ref(), st.RunID, st.FilesWay == filesDirect)
		helpers := shipper.Inspect(h.shipJob())
		kv = append(kv, "run", run.String(), "helpers", helpers.String())
		if !helpers.SavedAt.IsZero() {
			kv = append(kv, "offsets_saved_at", helpers.SavedAt.Format(time.RFC3339Nano))
		}
	}
	return kv
}
