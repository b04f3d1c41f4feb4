package nomadapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"
)

func TestOperation(t *testing.T) {
	for _, c := range []struct{ method, url, want string }{
		{"GET", "/v1/jobs?prefix=agentkernel-pool-", "jobs.list"},
		{"GET", "/v1/jobs?prefix=agentkernel-pool-&index=42&wait=300000ms", "jobs.watch"},
		{"PUT", "/v1/jobs", "jobs.register"},
		{"POST", "/v1/jobs/parse", "jobs.parse"},
		{"GET", "/v1/job/agentkernel-pool-py-5c1a1e2b", "jobs.info"},
		{"DELETE", "/v1/job/agentkernel-pool-py-5c1a1e2b%2Fdispatch-1-abc?purge=true", "jobs.deregister"},
		{"POST", "/v1/job/agentkernel-pool-py-5c1a1e2b/dispatch", "jobs.dispatch"},
		{"GET", "/v1/job/agentkernel-pool-py-5c1a1e2b%2Fdispatch-1-abc/allocations?all=true", "jobs.allocations"},
		{"GET", "/v1/job/x/evaluations", "jobs.evaluations"},
		{"POST", "/v1/job/x/evaluate", "jobs.evaluate"},
		{"GET", "/v1/job/x/versions", "other"},
		{"GET", "/v1/allocations?filter=x", "allocations.list"},
		{"GET", "/v1/allocations?index=1", "allocations.watch"},
		{"GET", "/v1/allocations?index=0", "allocations.list"},
		{"GET", "/v1/allocation/0b6f", "allocations.info"},
		{"GET", "/v1/allocation/0b6f?index=9", "allocations.info.watch"},
		{"GET", "/v1/client/allocation/0b6f/stats", "alloc.stats"},
		{"GET", "/v1/client/allocation/0b6f/checks", "alloc.checks"},
		{"GET", "/v1/client/allocation/0b6f/exec?task=sandbox", "alloc.exec"},
		{"GET", "/v1/vars?prefix=agentkernel-pool/claims/", "variables.list"},
		{"GET", "/v1/vars?prefix=agentkernel-pool/claims/&index=7", "variables.watch"},
		{"GET", "/v1/var/agentkernel-pool/claims/py/0b6f", "variables.read"},
		{"PUT", "/v1/var/agentkernel-pool/claims/py/0b6f?cas=0", "variables.create"},
		{"PUT", "/v1/var/agentkernel-pool/access?cas=12", "variables.update"},
		{"DELETE", "/v1/var/agentkernel-pool/claims/py/0b6f?cas=12", "variables.delete"},
		{"GET", "/v1/nodes", "nodes.list"},
		{"GET", "/v1/node/5c1a", "nodes.info"},
		{"GET", "/v1/agent/self", "agent.self"},
		{"GET", "/v1/agent/members", "other"},
		{"GET", "/v1/acl/token/self", "other"},
		{"GET", "/ui/", "other"},
	} {
		u, err := url.Parse(c.url)
		if err != nil {
			t.Fatal(err)
		}
		if got := Operation(c.method, u); got != c.want {
			t.Errorf("%s %s = %q, want %q", c.method, c.url, got, c.want)
		}
	}
}

// answerErr is the API client's error for an answer with status code.
func answerErr(t *testing.T, code int) error {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "no", code) }))
	defer srv.Close()
	c, err := NewClient(Config{Address: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	_, _, err = c.Nodes().List((&api.QueryOptions{}).WithContext(ctx))
	if StatusCode(err) != code {
		t.Fatalf("answer %d: got %v", code, err)
	}
	return err
}

func TestCallResult(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{nil, CallOK},
		{fmt.Errorf("exec: %w", answerErr(t, http.StatusForbidden)), Call4xx},
		{answerErr(t, http.StatusBadGateway), Call5xx},
		{api.ErrVariablePathNotFound, Call4xx},
		{api.ErrCASConflict{CheckIndex: 0, Conflict: &api.Variable{}}, Call4xx},
		{errors.New("websocket: close 1006 (abnormal closure): unexpected EOF"), CallError},
	} {
		if got := CallResult(c.err); got != c.want {
			t.Errorf("CallResult(%v) = %q, want %q", c.err, got, c.want)
		}
	}
}

// observed is a CallObserver that keeps "op result" of every request.
type observed struct {
	mu    sync.Mutex
	calls []string
}

func (o *observed) APICall(op, result string, took time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if took < 0 {
		op = "negative latency: " + op
	}
	o.calls = append(o.calls, op+" "+result)
}

// A client made with Config.Calls tells its observer of each request it
// sends, by operation and result: an answer, a refusal, a server error, and
// an agent that is not there.
func TestMeteredClient(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/jobs":
			w.Write([]byte("[]"))
		case "/v1/nodes":
			http.Error(w, "bad gateway", http.StatusBadGateway)
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	o := &observed{}
	c, err := NewClient(Config{Address: srv.URL, Calls: o})
	if err != nil {
		t.Fatal(err)
	}
	gone, err := NewClient(Config{Address: down.URL, Calls: o})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	q := (&api.QueryOptions{}).WithContext(ctx)
	if _, _, err := c.Jobs().List(q); err != nil {
		t.Fatalf("list jobs: %v", err)
	}
	if _, _, err := c.Variables().Read("agentkernel-pool/claims/py/0b6f", q); err == nil {
		t.Fatal("read a missing variable: no error")
	}
	if _, _, err := c.Nodes().List(q); StatusCode(err) != http.StatusBadGateway {
		t.Fatalf("list nodes: got %v, want a 502", err)
	}
	if _, _, err := gone.Allocations().List(q); err == nil {
		t.Fatal("a closed server answered")
	}
	want := []string{"jobs.list " + CallOK, "variables.read " + Call4xx, "nodes.list " + Call5xx, "allocations.list " + CallError}
	o.mu.Lock()
	defer o.mu.Unlock()
	if !slices.Equal(o.calls, want) {
		t.Errorf("observed %q, want %q", o.calls, want)
	}
}
