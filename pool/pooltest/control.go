package pooltest

// What a test does with a Server beside serving the API: sets its nodes and
// drivers, injects faults, hooks requests, and reads what it holds and
// counted.

import (
	"maps"
	"slices"
	"strings"
	"time"

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

// RequireToken makes every request without X-Nomad-Token secret fail with
// 403, as Nomad answers an unknown or deleted token; "" accepts any.
func (s *Server) RequireToken(secret string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.aclToken = secret
}

// SetParseFunc sets what /v1/jobs/parse answers; the default is DefaultJob.
func (s *Server) SetParseFunc(fn func(hcl string) (*api.Job, error)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.parseFunc = fn
}

// SetStartDelay sets how long new allocations stay pending before running.
func (s *Server) SetStartDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.startDelay = d
}

// SetFailStart makes new allocations fail instead of running.
func (s *Server) SetFailStart(fail bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failStart = fail
}

// SetBrokenCommand makes new allocations whose task's config command is cmd
// fail as Nomad reports a command that does not exist: a "Driver Failure"
// task event naming it. "" turns it off.
func (s *Server) SetBrokenCommand(cmd string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.brokenCommand = cmd
}

// SetUnplaceable makes dispatched jobs get no allocation, as when the
// scheduler finds no node: the job stays pending with one allocation queued,
// and its evaluation carries metric. Jobs already waiting get metric too, as
// when the scheduler tries them again (their summary does not change). nil
// turns it off for new jobs.
func (s *Server) SetUnplaceable(metric *api.AllocationMetric) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.unplaceable = metric
	if metric == nil {
		return
	}
	for _, evals := range s.evals {
		for _, ev := range evals {
			for tg := range ev.FailedTGAllocs {
				ev.FailedTGAllocs[tg] = metric
				ev.ModifyIndex = s.bumpLocked()
			}
		}
	}
}

// Dispatches returns the times of the dispatches so far, oldest first.
func (s *Server) Dispatches() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.dispatched)
}

// BeforeVarWrite sets a hook run before every variable write (PUT) with its
// path and cas parameter ("" when none); nil removes it.
func (s *Server) BeforeVarWrite(hook func(path, cas string)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.beforeVarWrite = hook
}

// BeforeAllocRead sets a hook run before every allocation read; nil removes it.
func (s *Server) BeforeAllocRead(hook func(allocID string)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.beforeAllocRead = hook
}

// AddNode adds a ready node.
func (s *Server) AddNode(id, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nodes[id] = &api.Node{ID: id, Name: name, Datacenter: "dc1", NodePool: "default", Status: "ready"}
}

// SetDriverAttr sets a driver's attribute on a node, as its fingerprint would.
func (s *Server) SetDriverAttr(nodeID, driver, key, value string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.driverLocked(nodeID, driver).Attributes[key] = value
}

// driverLocked is a driver's info on a node, made detected and healthy when
// the node has none yet.
func (s *Server) driverLocked(nodeID, driver string) *api.DriverInfo {
	n := s.nodes[nodeID]
	if n.Drivers == nil {
		n.Drivers = map[string]*api.DriverInfo{}
	}
	if n.Drivers[driver] == nil {
		n.Drivers[driver] = &api.DriverInfo{Attributes: map[string]string{}, Detected: true, Healthy: true}
	}
	return n.Drivers[driver]
}

// SetDriverHealth sets a driver's health on a node, as its fingerprint would.
func (s *Server) SetDriverHealth(nodeID, driver string, healthy bool, description string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.driverLocked(nodeID, driver)
	d.Healthy, d.HealthDescription = healthy, description
}

// RemoveNode forgets a node: reading it answers 404, as for a node that has
// not registered yet.
func (s *Server) RemoveNode(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.nodes, id)
}

// Inject adds a fault; it stays until it has hit Times requests or Clear.
func (s *Server) Inject(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, &f)
}

// Clear removes every fault.
func (s *Server) Clear() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

// Calls counts the requests so far whose method and path prefix match.
func (s *Server) Calls(method, pathPrefix string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k, c := range s.calls {
		m, p, _ := strings.Cut(k, " ")
		if (method == "" || m == method) && strings.HasPrefix(p, pathPrefix) {
			n += c
		}
	}
	return n
}
