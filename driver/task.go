package driver

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/agentkernel/agentkernel-pool/driver/taskfiles"
	"github.com/agentkernel/agentkernel-pool/plugin"
)

func (h *taskHandle) shipJob() shipJob {
	return shipJob{Ref: h.state.ref(), RunID: h.state.RunID, Stdout: h.cfg.StdoutPath, Stderr: h.cfg.StderrPath, Offsets: h.state.OffsetsPath}
}

// taskHandle tracks one running task.
type taskHandle struct {
	cfg   *plugin.TaskConfig
	state driverState

	cancel context.CancelFunc // stops the watcher (plugin shutdown: the task lives on)
	done   chan struct{}      // closed once the exit result is set

	mu          sync.Mutex
	exit        *plugin.ExitResult
	completedAt time.Time
	stopping    bool
	sync        *taskfiles.Sync // see files()
	filesOut    bool            // the write-back ran
	filesWhy    string          // why files are copied where a mount was the way
}

func (h *taskHandle) setExit(r plugin.ExitResult) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.exit != nil {
		return
	}
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

// taskStore holds the tasks this process tracks.
type taskStore struct {
	mu    sync.RWMutex
	tasks map[string]*taskHandle
}

func newTaskStore() *taskStore { return &taskStore{tasks: map[string]*taskHandle{}} }

func (s *taskStore) get(id string) (*taskHandle, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	h, ok := s.tasks[id]
	return h, ok
}

func (s *taskStore) set(id string, h *taskHandle) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tasks[id] = h
}

func (s *taskStore) delete(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.tasks, id)
}

// detachAll stops following every task without touching the sandboxes.
func (s *taskStore) detachAll() {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, h := range s.tasks {
		h.cancel()
	}
}

func (d *Driver) task(id string) (*taskHandle, error) {
	h, ok := d.tasks.get(id)
	if !ok {
		return nil, fmt.Errorf("task %q not found", id)
	}
	return h, nil
}

// taskAndBackend is a tracked task with the backend that reaches its sandbox.
func (d *Driver) taskAndBackend(id string) (*taskHandle, Backend, error) {
	h, err := d.task(id)
	if err != nil {
		return nil, nil, err
	}
	_, b, err := d.current()
	if err != nil {
		return nil, nil, err
	}
	return h, b, nil
}
