package driver

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/agentkernel/agentkernel-pool/driver/shipper"
	"github.com/agentkernel/agentkernel-pool/driver/taskfiles"
	"github.com/agentkernel/agentkernel-pool/internal/untrusted"
	"github.com/agentkernel/agentkernel-pool/plugin"
	"github.com/agentkernel/agentkernel-pool/pool"
)

// taskHandle tracks one running task.
type taskHandle struct {
	cfg   *plugin.TaskConfig
	state driverState
	// claim is the pool's claim as StartTask got it, its record perhaps
	// still being written (pool.Claim.Wait); nil for a recovered task.
	claim *pool.Claim

	cancel context.CancelFunc // stops the watcher (plugin shutdown: the task lives on)
	done   chan struct{}      // closed once the exit result is set

	mu          sync.Mutex
	exit        *plugin.ExitResult
	completedAt time.Time
	stopping    bool
	ending      bool            // the sandbox is being ended for the exit: its death is no news
	endErr      error           // why its processes could not all be ended
	sync        *taskfiles.Sync // see files()
	filesOut    bool            // the write-back ran
	filesWhy    string          // why files are copied where a mount was the way
	step        string          // what the watcher waits for (watchdog.go)
}

func (h *taskHandle) setExit(r plugin.ExitResult) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.exit != nil {
		return
	}
	r.Err = untrusted.Message(r.Err) // Nomad shows it; parts of it may come from the sandbox
	h.exit = &r
	h.completedAt = time.Now()
	close(h.done)
}

func (h *taskHandle) result() (*plugin.ExitResult, time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.exit, h.completedAt
}

func (h *taskHandle) handle() (*plugin.TaskHandle, error) {
	b, err := json.Marshal(h.state)
	if err != nil {
		return nil, fmt.Errorf("encode driver state: %w", err)
	}
	return &plugin.TaskHandle{Version: stateVersion, Config: h.cfg, State: plugin.TaskStateRunning, DriverState: b}, nil
}

func (h *taskHandle) shipJob() shipper.Job {
	return shipper.Job{Ref: h.state.ref(), RunID: h.state.RunID, Stdout: h.cfg.StdoutPath, Stderr: h.cfg.StderrPath, Offsets: h.state.OffsetsPath}
}
