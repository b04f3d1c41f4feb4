package pooltest

import (
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/nomad/api"
)

func (s *Server) parse(r *http.Request) (int, any) {
	var req api.JobsParseRequest
	if err := decode(r, &req); err != nil {
		return http.StatusBadRequest, err.Error()
	}
	job, err := s.parseFunc(req.JobHCL)
	if err != nil {
		return http.StatusBadRequest, err.Error()
	}
	return http.StatusOK, job
}

func (s *Server) register(r *http.Request) (int, any) {
	var req api.JobRegisterRequest
	if err := decode(r, &req); err != nil || req.Job == nil || req.Job.ID == nil {
		return http.StatusBadRequest, "bad job register request"
	}
	job := req.Job
	idx := s.bumpLocked()
	version := uint64(0)
	if old := s.jobs[*job.ID]; old != nil {
		version = *old.Version + 1
		job.CreateIndex = old.CreateIndex
	} else {
		job.CreateIndex = &idx
	}
	job.Version, job.JobModifyIndex, job.ModifyIndex = &version, &idx, &idx
	job.Stop, job.Status = new(false), new("running")
	job.SubmitTime = new(time.Now().UnixNano())
	s.jobs[*job.ID] = job
	return http.StatusOK, api.JobRegisterResponse{JobModifyIndex: idx}
}

func (s *Server) jobInfo(id string) (int, any) {
	j := s.jobs[id]
	if j == nil {
		return http.StatusNotFound, "job not found"
	}
	return http.StatusOK, j
}

func (s *Server) listJobs(q url.Values) (int, any) {
	out := []*api.JobListStub{}
	for id, j := range s.jobs {
		if !strings.HasPrefix(id, q.Get("prefix")) {
			continue
		}
		st := &api.JobListStub{
			ID: id, ParentID: deref(j.ParentID), Name: deref(j.Name), Namespace: deref(j.Namespace),
			Type: deref(j.Type), ParameterizedJob: j.ParameterizedJob != nil && !j.Dispatched,
			Stop: deref(j.Stop), Status: s.jobStatusLocked(j), CreateIndex: deref(j.CreateIndex),
			ModifyIndex: deref(j.ModifyIndex), JobModifyIndex: deref(j.JobModifyIndex), SubmitTime: deref(j.SubmitTime),
		}
		if q.Get("meta") == "true" {
			st.Meta = maps.Clone(j.Meta)
		}
		if j.Dispatched && len(j.TaskGroups) > 0 {
			queued := 0
			if len(s.evals[id]) > 0 && !s.hasAllocLocked(id) {
				queued = 1
			}
			st.JobSummary = &api.JobSummary{JobID: id, Summary: map[string]api.TaskGroupSummary{deref(j.TaskGroups[0].Name): {Queued: queued}}}
		}
		out = append(out, st)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].ID < out[b].ID })
	return http.StatusOK, out
}

func (s *Server) hasAllocLocked(jobID string) bool {
	for _, a := range s.allocs {
		if a.JobID == jobID {
			return true
		}
	}
	return false
}

// jobAllocs lists a job's allocations, terminal ones included.
func (s *Server) jobAllocs(id string) (int, any) {
	out := []*api.AllocationListStub{}
	for _, a := range s.allocs {
		if a.JobID == id {
			st := a.Stub()
			st.TaskStates = cloneStates(a.TaskStates)
			out = append(out, st)
		}
	}
	return http.StatusOK, out
}

// jobStatusLocked derives a child's status from its allocations like Nomad.
func (s *Server) jobStatusLocked(j *api.Job) string {
	if !j.Dispatched {
		return deref(j.Status)
	}
	status := "dead"
	if len(s.evals[*j.ID]) > 0 {
		status = "pending" // not placed: its evaluation is blocked
	}
	for _, a := range s.allocs {
		if a.JobID != *j.ID {
			continue
		}
		switch a.ClientStatus {
		case api.AllocClientStatusRunning:
			return "running"
		case api.AllocClientStatusPending:
			status = "pending"
		}
	}
	return status
}

func (s *Server) dispatch(r *http.Request, parentID string) (int, any) {
	var req api.JobDispatchRequest
	if err := decode(r, &req); err != nil {
		return http.StatusBadRequest, err.Error()
	}
	parent := s.jobs[parentID]
	switch {
	case parent == nil:
		return http.StatusNotFound, "parameterized job not found"
	case parent.ParameterizedJob == nil || parent.Dispatched:
		return http.StatusBadRequest, "Specified job is not a parameterized job"
	case deref(parent.Stop):
		return http.StatusBadRequest, "Specified job is stopped"
	}
	allowed := append(slices.Clone(parent.ParameterizedJob.MetaOptional), parent.ParameterizedJob.MetaRequired...)
	for k := range req.Meta {
		if !slices.Contains(allowed, k) {
			// Nomad rejects it as an internal error, not a bad request.
			return http.StatusInternalServerError, fmt.Sprintf("Dispatch does not allow meta key %q", k)
		}
	}
	token := r.URL.Query().Get("idempotency_token")
	if id, ok := s.tokens[parentID+"/"+token]; ok && token != "" && s.jobs[id] != nil {
		return http.StatusOK, api.JobDispatchResponse{DispatchedJobID: id, JobCreateIndex: *s.jobs[id].CreateIndex}
	}
	s.seq++
	child := *parent
	id := fmt.Sprintf("%s/dispatch-%d-%08x", parentID, time.Now().Unix(), s.seq)
	idx := s.bumpLocked()
	child.ID, child.Name, child.ParentID = &id, &id, &parentID
	child.Dispatched = true
	child.Meta = maps.Clone(parent.Meta)
	maps.Copy(child.Meta, req.Meta)
	child.CreateIndex, child.ModifyIndex, child.JobModifyIndex = &idx, &idx, &idx
	child.SubmitTime = new(time.Now().UnixNano())
	s.jobs[id] = &child
	if token != "" {
		s.tokens[parentID+"/"+token] = id
	}
	s.dispatched = append(s.dispatched, time.Now())
	if s.unplaceable != nil {
		tg := deref(child.TaskGroups[0].Name)
		s.evals[id] = []*api.Evaluation{{
			ID: fmt.Sprintf("eval-%d", s.seq), JobID: id, Status: "complete", CreateIndex: idx,
			FailedTGAllocs: map[string]*api.AllocationMetric{tg: s.unplaceable}, QueuedAllocations: map[string]int{tg: 1},
		}}
		return http.StatusOK, api.JobDispatchResponse{DispatchedJobID: id, JobCreateIndex: idx}
	}
	s.placeLocked(&child)
	return http.StatusOK, api.JobDispatchResponse{DispatchedJobID: id, JobCreateIndex: idx}
}

// placeLocked creates the child's allocation on the node its constraint
// names and starts it after StartDelay.
func (s *Server) placeLocked(j *api.Job) {
	node := NodeID
	for _, c := range j.Constraints {
		if c.LTarget == "${node.unique.id}" {
			node = c.RTarget
		}
	}
	tg := j.TaskGroups[0]
	s.seq++
	id := fmt.Sprintf("%08x-0000-4000-8000-%012x", s.seq, time.Now().UnixNano()&0xffffffffffff)
	idx := s.bumpLocked()
	a := &api.Allocation{
		ID: id, Namespace: deref(j.Namespace), NodeID: node, JobID: *j.ID, Job: j, TaskGroup: deref(tg.Name),
		DesiredStatus: api.AllocDesiredStatusRun, ClientStatus: api.AllocClientStatusPending,
		TaskStates:  map[string]*api.TaskState{tg.Tasks[0].Name: {State: "pending"}},
		CreateIndex: idx, ModifyIndex: idx, CreateTime: time.Now().UnixNano(),
	}
	s.allocs[id] = a
	time.AfterFunc(s.startDelay, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if a.ClientStatus != api.AllocClientStatusPending || a.DesiredStatus != api.AllocDesiredStatusRun {
			return
		}
		if cmd, _ := tg.Tasks[0].Config["command"].(string); s.brokenCommand != "" && cmd == s.brokenCommand {
			for _, ts := range a.TaskStates {
				// As Nomad reports it: the driver's failure, then the
				// restart policy's verdict, which also fails the task.
				ts.Events = append(ts.Events,
					&api.TaskEvent{Type: api.TaskDriverFailure, DisplayMessage: fmt.Sprintf("failed to launch command with executor: exec: %q: no such file or directory", cmd)},
					&api.TaskEvent{Type: api.TaskNotRestarting, FailsTask: true, DisplayMessage: "Policy allows no restarts"})
			}
			s.setAllocLocked(a, api.AllocClientStatusFailed, "dead")
			return
		}
		if s.failStart {
			s.setAllocLocked(a, api.AllocClientStatusFailed, "dead")
			return
		}
		s.setAllocLocked(a, api.AllocClientStatusRunning, "running")
	})
}

func (s *Server) setAllocLocked(a *api.Allocation, client, task string) {
	a.ClientStatus = client
	for _, ts := range a.TaskStates {
		if task == "running" && ts.State != "running" {
			ts.StartedAt = time.Now()
		}
		ts.State = task
		ts.Failed = client == api.AllocClientStatusFailed
	}
	a.ModifyIndex = s.bumpLocked()
}

func (s *Server) deregister(id string, purge bool) (int, any) {
	j := s.jobs[id]
	if j == nil {
		return http.StatusNotFound, "job not found"
	}
	j.Stop = new(true)
	if purge {
		delete(s.jobs, id)
	}
	for _, a := range s.allocs {
		if a.JobID == id && a.DesiredStatus == api.AllocDesiredStatusRun {
			a.DesiredStatus = api.AllocDesiredStatusStop
			if a.ClientStatus == api.AllocClientStatusPending || a.ClientStatus == api.AllocClientStatusRunning {
				s.setAllocLocked(a, api.AllocClientStatusComplete, "dead")
			}
		}
	}
	idx := s.bumpLocked()
	return http.StatusOK, api.JobDeregisterResponse{EvalID: "", JobModifyIndex: idx}
}

func (s *Server) listAllocs(q url.Values) (int, any) {
	out := []*api.AllocationListStub{}
	for _, a := range s.allocs {
		if strings.HasPrefix(a.ID, q.Get("prefix")) {
			st := a.Stub()
			st.TaskStates = cloneStates(a.TaskStates)
			out = append(out, st)
		}
	}
	return http.StatusOK, out
}

func (s *Server) allocInfo(id string) (int, any) {
	a := s.allocs[id]
	if a == nil {
		return http.StatusNotFound, "alloc not found"
	}
	cp := *a
	cp.TaskStates = cloneStates(a.TaskStates)
	return http.StatusOK, &cp
}

func (s *Server) nodeInfo(id string) (int, any) {
	if n := s.nodes[id]; n != nil {
		return http.StatusOK, n
	}
	return http.StatusNotFound, "node not found"
}

func (s *Server) listNodes() (int, any) {
	out := []*api.NodeListStub{}
	for _, n := range s.nodes {
		out = append(out, &api.NodeListStub{ID: n.ID, Name: n.Name, Datacenter: n.Datacenter, NodePool: n.NodePool, Status: n.Status, Drivers: n.Drivers})
	}
	return http.StatusOK, out
}

func (s *Server) listVars(prefix string) (int, any) {
	out := []*api.VariableMetadata{}
	for p, v := range s.vars {
		if strings.HasPrefix(p, prefix) {
			out = append(out, v.Metadata())
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Path < out[b].Path })
	return http.StatusOK, out
}

func (s *Server) readVar(path string) (int, any) {
	if v := s.vars[path]; v != nil {
		return http.StatusOK, v.Copy()
	}
	return http.StatusNotFound, "variable not found"
}

func (s *Server) writeVar(r *http.Request, path string, q url.Values) (int, any) {
	var in api.Variable
	if err := decode(r, &in); err != nil {
		return http.StatusBadRequest, err.Error()
	}
	if len(in.Items) == 0 {
		return http.StatusBadRequest, "variable missing required Items object"
	}
	cur := s.vars[path]
	if cas := q.Get("cas"); cas != "" {
		want, _ := strconv.ParseUint(cas, 10, 64)
		if (cur == nil && want != 0) || (cur != nil && cur.ModifyIndex != want) {
			if cur == nil {
				return http.StatusConflict, &api.Variable{Path: path}
			}
			return http.StatusConflict, cur.Copy()
		}
	}
	idx := s.bumpLocked()
	v := &api.Variable{Namespace: "default", Path: path, Items: in.Items, ModifyIndex: idx, ModifyTime: time.Now().UnixNano()}
	if cur != nil {
		v.CreateIndex, v.CreateTime = cur.CreateIndex, cur.CreateTime
	} else {
		v.CreateIndex, v.CreateTime = idx, v.ModifyTime
	}
	s.vars[path] = v
	return http.StatusOK, v.Copy()
}

func (s *Server) deleteVar(path string, q url.Values) (int, any) {
	if cas := q.Get("cas"); cas != "" {
		want, _ := strconv.ParseUint(cas, 10, 64)
		if cur := s.vars[path]; cur != nil && cur.ModifyIndex != want {
			return http.StatusConflict, cur.Copy()
		}
	}
	delete(s.vars, path)
	s.bumpLocked()
	return http.StatusNoContent, nil
}

func cloneStates(in map[string]*api.TaskState) map[string]*api.TaskState {
	out := make(map[string]*api.TaskState, len(in))
	for k, v := range in {
		cp := *v
		out[k] = &cp
	}
	return out
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}
