package driver

import (
	"context"
	"strings"
	"testing"

	"github.com/agentkernel/agentkernel-pool/plugin/proto/drivers"
)

// A pool limited to some namespaces refuses tasks of others at once, without
// a claim and without a retry, naming the pool, the namespace and who may
// use it; a task of a listed namespace gets a sandbox.
func TestPoolNamespacesLimitWhoClaims(t *testing.T) {
	e := newEnv(t)
	pools := e.devPool()
	pools["dev"].(map[string]any)["namespaces"] = []string{"team-a", "team-b"}
	e.configure(pools)

	other := e.taskConfig("agent", map[string]any{"pool": "dev", "command": "/bin/true"}, nil)
	other.Namespace = "default"
	_, err := e.c.Driver.StartTask(context.Background(), &drivers.StartTaskRequest{Task: other})
	if err == nil || !strings.Contains(err.Error(), `pool "dev" does not serve namespace "default"; it serves namespaces: team-a, team-b`) {
		t.Fatalf("error %v does not name the pool, the namespace and the allowed ones", err)
	}
	if recoverable(err) {
		t.Error("a refused namespace must not be retried")
	}
	if e.pool.Stats()["dev"].Claimed != 0 {
		t.Fatalf("a refused task claimed a sandbox: %+v", e.pool.Stats())
	}

	allowed := e.taskConfig("agent2", map[string]any{"pool": "dev", "command": "/bin/true"}, nil)
	allowed.Namespace = "team-b"
	e.start(allowed)
	if got := e.pool.Stats()["dev"].Claimed; got != 1 {
		t.Fatalf("task of an allowed namespace: %d claims, want 1", got)
	}
}
