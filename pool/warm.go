package pool

// WarmAlloc is a warm allocation that a claim could hand out now.
type WarmAlloc struct {
	Pool     string
	AllocID  string
	JobID    string
	TaskName string
	// ReadyCommand is the template's ready command (ready.go), "" for none:
	// Prepare gets it so that the way it opens can run it later.
	ReadyCommand string
}

// Warm lists the warm allocations of every pool, oldest first within a pool.
// It reads the in-memory inventory: callers may use it to prepare warm
// allocations ahead of claims (the driver primes its launch path with it).
func (m *Manager) Warm() []WarmAlloc {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []WarmAlloc
	for _, name := range m.names {
		for _, in := range m.pools[name].view.candidates {
			out = append(out, WarmAlloc{Pool: name, AllocID: in.allocID, JobID: in.jobID, TaskName: in.task})
		}
	}
	return out
}
