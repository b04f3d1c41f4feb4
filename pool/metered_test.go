package pool

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-pool/internal/nomadapi"
	"github.com/agentkernel/agentkernel-pool/pool/pooltest"
)

// callRecorder is a nomadapi.CallObserver that counts requests by operation and result.
type callRecorder struct {
	mu    sync.Mutex
	n     map[string]int // "op result"
	total int
}

func (r *callRecorder) APICall(op, result string, took time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n == nil {
		r.n = map[string]int{}
	}
	r.n[op+" "+result]++
	r.total++
	if took < 0 {
		panic("negative latency")
	}
}

func (r *callRecorder) count(op, result string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n[op+" "+result]
}

func (r *callRecorder) sum(op string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, result := range []string{nomadapi.CallOK, nomadapi.Call4xx, nomadapi.Call5xx, nomadapi.CallError} {
		n += r.n[op+" "+result]
	}
	return n
}

// A metered client tells its observer of every request the Nomad API sees,
// each under its operation and result: a pool's whole life (template, watches,
// dispatches, a claim and its release), a retried 5xx, a 404, a request that
// timed out and one to an agent that is down.
func TestMeteredClientCountsEveryRequest(t *testing.T) {
	srv := pooltest.New()
	t.Cleanup(srv.Close)
	rec := &callRecorder{}
	client, err := nomadapi.NewClient(nomadapi.Config{Address: srv.URL, Calls: rec})
	if err != nil {
		t.Fatal(err)
	}
	m := newManager(t, srv, func(m *Manager) { m.client = client }, Config{Name: "py", Size: 1, Max: 3})
	if err := m.Start(ctx(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "1 warm", func() bool { return m.Stats()["py"].Warm == 1 })

	// The replacement a claim dispatches meets a 500 once and is retried.
	srv.Inject(pooltest.Fault{Method: http.MethodPut, Path: "/v1/job/", Status: http.StatusInternalServerError, Times: 1})
	c := claim(t, m, Owner{})
	waitFor(t, 5*time.Second, "refilled", func() bool { s := m.Stats()["py"]; return s.Warm == 1 && s.Claimed == 1 })
	if err := m.Release(ctx(t, 5*time.Second), c); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "released", func() bool { return m.Stats()["py"].Claimed == 0 })
	m.Stop() // ends the watches: every request has its answer, or its error

	// A claim record that is not there: 404.
	if _, _, err := client.Variables().Read("nope", nil); !errors.Is(err, api.ErrVariablePathNotFound) {
		t.Fatalf("read a missing variable: %v", err)
	}
	// A request that outlives its deadline has no answer.
	srv.Inject(pooltest.Fault{Path: "/v1/nodes", Delay: 5 * time.Second, Times: 1})
	if _, _, err := client.Nodes().List(queryOpts(ctx(t, 100*time.Millisecond), "")); err == nil {
		t.Fatal("a node list past its deadline answered")
	}

	rec.mu.Lock()
	total, byOp := rec.total, fmt.Sprint(rec.n)
	answered := total
	for k, n := range rec.n {
		if strings.HasSuffix(k, " "+nomadapi.CallError) {
			answered -= n
		}
	}
	rec.mu.Unlock()
	t.Logf("requests by operation and result: %s", byOp)
	// Every request the server saw is counted, and every answer it gave.
	// A request without an answer (a watch Stop cancelled, the one past its
	// deadline) is an error whether or not it reached the server first.
	if seen := srv.Calls("", "/"); total < seen || answered > seen {
		t.Errorf("observer counted %d requests, %d of them answered; the server saw %d", total, answered, seen)
	}
	for _, c := range []struct {
		ops          []string
		method, path string
	}{
		{[]string{"jobs.parse"}, http.MethodPut, "/v1/jobs/parse"},
		{[]string{"jobs.dispatch"}, http.MethodPut, "/v1/job/"}, // the pool's only PUT under /v1/job/
		{[]string{"jobs.deregister"}, http.MethodDelete, "/v1/job/"},
		{[]string{"variables.create", "variables.update"}, http.MethodPut, "/v1/var/"},
		{[]string{"variables.delete"}, http.MethodDelete, "/v1/var/"},
		{[]string{"variables.read"}, http.MethodGet, "/v1/var/"},
		{[]string{"nodes.list"}, http.MethodGet, "/v1/nodes"},
	} {
		got := 0
		for _, op := range c.ops {
			got += rec.sum(op)
		}
		if want := srv.Calls(c.method, c.path); got != want || got == 0 {
			t.Errorf("%v: observer counted %d, the server saw %d %s %s", c.ops, got, want, c.method, c.path)
		}
	}
	for _, c := range []struct {
		op, result string
		want       int
	}{
		{"jobs.dispatch", nomadapi.CallOK, 2}, // the first warm one and the replacement
		// The injected fault, and the access check's probe, which Nomad
		// refuses (by design) with a 500: asked once, not retried.
		{"jobs.dispatch", nomadapi.Call5xx, 2},
		{"variables.create", nomadapi.CallOK, 1},
		{"variables.read", nomadapi.Call4xx, 1},
		{"nodes.list", nomadapi.CallError, 1},
	} {
		if got := rec.count(c.op, c.result); got != c.want {
			t.Errorf("%s %s = %d, want %d", c.op, c.result, got, c.want)
		}
	}
	if rec.sum("allocations.watch") == 0 || rec.sum("jobs.watch") == 0 || rec.sum("variables.watch") == 0 {
		t.Errorf("the inventory's blocking queries are not counted as watches: %s", byOp)
	}

	// An agent that is not there: no answer at all.
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	gone, err := nomadapi.NewClient(nomadapi.Config{Address: down.URL, Calls: rec})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := gone.Jobs().List(queryOpts(ctx(t, 5*time.Second), "")); err == nil {
		t.Fatal("a closed server answered")
	}
	if got := rec.count("jobs.list", nomadapi.CallError); got != 1 {
		t.Errorf("jobs.list error = %d, want 1", got)
	}
}
