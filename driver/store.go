package driver

import (
	"fmt"
	"sync"
)

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

// all lists the tasks the store holds.
func (s *taskStore) all() []*taskHandle {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]*taskHandle, 0, len(s.tasks))
	for _, h := range s.tasks {
		out = append(out, h)
	}
	return out
}

// count is how many tasks the store holds.
func (s *taskStore) count() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.tasks)
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
