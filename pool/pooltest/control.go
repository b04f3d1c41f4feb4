package pooltest

import (
	"maps"
	"strings"

	"github.com/hashicorp/nomad/api"
)

// Children returns the IDs of dispatched jobs (not purged) under prefix.
func (s *Server) Children(prefix string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for id, j := range s.jobs {
		if j.Dispatched && strings.HasPrefix(id, prefix) {
			out = append(out, id)
		}
	}
	return out
}

// Job returns a copy of a registered job, or nil.
func (s *Server) Job(id string) *api.Job {
	s.mu.Lock()
	defer s.mu.Unlock()
	if j := s.jobs[id]; j != nil {
		cp := *j
		cp.Meta = maps.Clone(j.Meta)
		return &cp
	}
	return nil
}

// LiveAllocs returns the allocations that are pending or running and meant
// to run, by ID, with their job IDs.
func (s *Server) LiveAllocs() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]string{}
	for id, a := range s.allocs {
		if a.DesiredStatus == api.AllocDesiredStatusRun &&
			(a.ClientStatus == api.AllocClientStatusPending || a.ClientStatus == api.AllocClientStatusRunning) {
			out[id] = a.JobID
		}
	}
	return out
}

// FailAlloc makes an allocation fail as if its task died.
func (s *Server) FailAlloc(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.allocs[id]; a != nil {
		s.setAllocLocked(a, api.AllocClientStatusFailed, "dead")
	}
}

// RemoveAlloc deletes an allocation outright, as garbage collection does.
func (s *Server) RemoveAlloc(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.allocs, id)
	s.bumpLocked()
}

// AddAlloc adds an allocation as is (for example an owner allocation).
func (s *Server) AddAlloc(a *api.Allocation) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a.CreateIndex = s.bumpLocked()
	a.ModifyIndex = a.CreateIndex
	s.allocs[a.ID] = a
}

// SetAllocStatus sets an allocation's client status and all its task states.
func (s *Server) SetAllocStatus(id, client, task string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.allocs[id]; a != nil {
		s.setAllocLocked(a, client, task)
	}
}

// Vars returns the items of every variable under prefix, by path.
func (s *Server) Vars(prefix string) map[string]api.VariableItems {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]api.VariableItems{}
	for p, v := range s.vars {
		if strings.HasPrefix(p, prefix) {
			out[p] = maps.Clone(v.Items)
		}
	}
	return out
}

// PutVar writes a variable, as another process would.
func (s *Server) PutVar(path string, items api.VariableItems) {
	s.mu.Lock()
	defer s.mu.Unlock()
	idx := s.bumpLocked()
	s.vars[path] = &api.Variable{Namespace: "default", Path: path, Items: maps.Clone(items), CreateIndex: idx, ModifyIndex: idx}
}
