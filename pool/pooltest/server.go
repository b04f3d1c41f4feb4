// Package pooltest is an in-memory stand-in for the parts of the Nomad HTTP
// API the pool uses (jobs, dispatch, allocations, variables, nodes), with
// blocking queries and switches for faults: 5xx answers, slow answers,
// claims taken by someone else, allocations that die or vanish. It lets the
// pool and the driver be tested without a Nomad agent.
package pooltest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/nomad/api"
)

// NodeID is the ID of the one node the Server has unless AddNode adds more.
const NodeID = "5c1a1e2b-6f3d-4b1e-9a7f-0123456789ab"

// Fault changes the answers to requests whose method and path match.
type Fault struct {
	Method string        // "" matches any
	Path   string        // prefix of the unescaped URL path, e.g. "/v1/var/"
	Query  string        // substring of the raw query, e.g. "index=" (blocking queries only)
	Status int           // answer with this status (0: answer normally)
	Delay  time.Duration // before answering (or failing)
	Times  int           // how many matching requests it hits; 0 means until cleared
}

// Server is the fake Nomad API. Create it with New and Close it when done.
type Server struct {
	*httptest.Server

	mu      sync.Mutex
	index   uint64
	changed chan struct{}
	jobs    map[string]*api.Job
	allocs  map[string]*api.Allocation
	vars    map[string]*api.Variable
	nodes   map[string]*api.Node
	tokens  map[string]string // dispatch idempotency token -> child job ID
	faults  []*Fault
	calls   map[string]int
	seq     int

	parseFunc func(hcl string) (*api.Job, error)

	startDelay      time.Duration
	failStart       bool
	brokenCommand   string
	unplaceable     *api.AllocationMetric
	evals           map[string][]*api.Evaluation // by job ID
	dispatched      []time.Time
	aclToken        string
	beforeVarWrite  func(path, cas string)
	beforeAllocRead func(allocID string)
	checkResults    func(allocID string) api.AllocCheckStatuses
}

// New starts a Server with one ready node, NodeID.
func New() *Server {
	s := &Server{
		index:   1,
		changed: make(chan struct{}),
		jobs:    map[string]*api.Job{},
		allocs:  map[string]*api.Allocation{},
		vars:    map[string]*api.Variable{},
		nodes:   map[string]*api.Node{},
		tokens:  map[string]string{},
		calls:   map[string]int{},
		evals:   map[string][]*api.Evaluation{},
	}
	s.parseFunc = DefaultJob
	s.AddNode(NodeID, "fake-node")
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	return s
}

// Client returns a Nomad API client for s.
func (s *Server) Client() *api.Client {
	cfg := api.DefaultConfig()
	cfg.Address = s.URL
	cfg.SecretID = ""
	c, err := api.NewClient(cfg)
	if err != nil {
		panic(err)
	}
	return c
}

// DefaultJob is the default ParseFunc: one group with one raw_exec task.
func DefaultJob(string) (*api.Job, error) {
	return &api.Job{
		ID: new("sandbox"),
		TaskGroups: []*api.TaskGroup{{
			Name: new("sandbox"),
			Tasks: []*api.Task{{
				Name: "sandbox", Driver: "raw_exec",
				Config: map[string]any{"command": "/bin/sleep", "args": []string{"3600"}},
			}},
		}},
	}, nil
}

// bumpLocked advances the index and wakes blocking queries.
func (s *Server) bumpLocked() uint64 {
	s.index++
	close(s.changed)
	s.changed = make(chan struct{})
	return s.index
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	s.mu.Lock()
	s.calls[r.Method+" "+path]++
	if s.aclToken != "" && r.Header.Get("X-Nomad-Token") != s.aclToken {
		s.mu.Unlock()
		http.Error(w, "Permission denied", http.StatusForbidden)
		return
	}
	var fault *Fault
	for i, f := range s.faults {
		if (f.Method == "" || f.Method == r.Method) && strings.HasPrefix(path, f.Path) && strings.Contains(r.URL.RawQuery, f.Query) {
			fault = f
			if f.Times > 0 {
				if f.Times--; f.Times == 0 {
					s.faults = append(s.faults[:i:i], s.faults[i+1:]...)
				}
			}
			break
		}
	}
	s.mu.Unlock()
	if fault != nil {
		if fault.Delay > 0 {
			select {
			case <-time.After(fault.Delay):
			case <-r.Context().Done():
				return
			}
		}
		if fault.Status != 0 {
			http.Error(w, fmt.Sprintf("injected fault: %d", fault.Status), fault.Status)
			return
		}
	}
	if r.Method == http.MethodGet {
		s.block(r)
	}
	s.runHooks(r)
	// The index is read with the state it describes, as Nomad does: a list
	// never claims an index newer than its contents.
	// The body is encoded under the lock too: it may point into the state
	// (a job, a node), which a concurrent write would change mid-encoding.
	s.mu.Lock()
	status, body := s.route(r)
	idx := s.index
	encoded, encErr := json.Marshal(body)
	s.mu.Unlock()
	w.Header().Set("X-Nomad-Index", strconv.FormatUint(idx, 10))
	w.Header().Set("X-Nomad-LastContact", "0")
	w.Header().Set("X-Nomad-KnownLeader", "true")
	if msg, ok := body.(string); ok && status >= 400 {
		http.Error(w, msg, status)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if status == http.StatusNoContent {
		w.WriteHeader(status)
		return
	}
	if encErr != nil {
		http.Error(w, "encode response: "+encErr.Error(), http.StatusInternalServerError)
		return
	}
	w.WriteHeader(status)
	_, _ = w.Write(encoded)
}

// block implements blocking queries: wait until the index passes ?index=
// or ?wait= elapses.
func (s *Server) block(r *http.Request) {
	min, _ := strconv.ParseUint(r.URL.Query().Get("index"), 10, 64)
	if min == 0 {
		return
	}
	wait := 5 * time.Minute
	if d, err := time.ParseDuration(r.URL.Query().Get("wait")); err == nil && d > 0 {
		wait = d
	}
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		idx, ch := s.index, s.changed
		s.mu.Unlock()
		if idx > min {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			return
		case <-r.Context().Done():
			return
		}
	}
}

// route answers r; the caller holds s.mu.
func (s *Server) route(r *http.Request) (int, any) {
	path, q := r.URL.Path, r.URL.Query()
	escaped := r.URL.EscapedPath()
	switch {
	case path == "/v1/jobs/parse":
		return s.parse(r)
	case path == "/v1/jobs" && r.Method == http.MethodGet:
		return s.listJobs(q)
	case path == "/v1/jobs":
		return s.register(r)
	case strings.HasPrefix(escaped, "/v1/job/"):
		rest := strings.TrimPrefix(escaped, "/v1/job/")
		if id, ok := strings.CutSuffix(rest, "/dispatch"); ok {
			id, _ = url.PathUnescape(id)
			return s.dispatch(r, id)
		}
		if id, ok := strings.CutSuffix(rest, "/allocations"); ok {
			id, _ = url.PathUnescape(id)
			return s.jobAllocs(id)
		}
		if id, ok := strings.CutSuffix(rest, "/evaluations"); ok {
			id, _ = url.PathUnescape(id)
			return http.StatusOK, s.evals[id]
		}
		id, _ := url.PathUnescape(rest)
		if r.Method == http.MethodDelete {
			return s.deregister(id, q.Get("purge") == "true")
		}
		return s.jobInfo(id)
	case path == "/v1/allocations":
		return s.listAllocs(q)
	case strings.HasPrefix(path, "/v1/allocation/"):
		return s.allocInfo(strings.TrimPrefix(path, "/v1/allocation/"))
	case strings.HasPrefix(path, "/v1/client/allocation/"):
		if code, body, ok := s.allocChecks(strings.TrimPrefix(path, "/v1/client/allocation/")); ok {
			return code, body
		}
	case path == "/v1/nodes":
		return s.listNodes()
	case strings.HasPrefix(path, "/v1/node/"):
		return s.nodeInfo(strings.TrimPrefix(path, "/v1/node/"))
	case path == "/v1/vars":
		return s.listVars(q.Get("prefix"))
	case strings.HasPrefix(path, "/v1/var/"):
		p := strings.TrimPrefix(path, "/v1/var/")
		switch r.Method {
		case http.MethodGet:
			return s.readVar(p)
		case http.MethodDelete:
			return s.deleteVar(p, q)
		default:
			return s.writeVar(r, p, q)
		}
	}
	return http.StatusNotFound, "no such endpoint in pooltest: " + r.Method + " " + path
}

// runHooks calls the test hooks for r, without the lock.
func (s *Server) runHooks(r *http.Request) {
	path := r.URL.Path
	s.mu.Lock()
	allocHook, varHook := s.beforeAllocRead, s.beforeVarWrite
	s.mu.Unlock()
	if hook := allocHook; hook != nil && strings.HasPrefix(path, "/v1/allocation/") {
		hook(strings.TrimPrefix(path, "/v1/allocation/"))
	}
	if hook := varHook; hook != nil && r.Method == http.MethodPut && strings.HasPrefix(path, "/v1/var/") {
		hook(strings.TrimPrefix(path, "/v1/var/"), r.URL.Query().Get("cas"))
	}
}

func decode(r *http.Request, v any) error {
	return json.NewDecoder(r.Body).Decode(v)
}
