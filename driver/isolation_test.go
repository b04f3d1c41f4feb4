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

// A task reaches only its own sandbox: each task gets a sandbox of its own,
// a config naming an allocation is not obeyed (the schema has no such field;
// a stray key is ignored), and an exec into a task lands in that task's
// claimed allocation, never another's.
func TestTasksReachOnlyTheirOwnSandbox(t *testing.T) {
	e := newEnv(t)
	e.configure(e.devPool())
	a := e.taskConfig("a", map[string]any{"pool": "dev"}, nil)
	b := e.taskConfig("b", map[string]any{"pool": "dev", "alloc_id": "a1-0000-0000-0000-000000000000"}, nil)
	b.Id = "0000bbbb-0000-0000-0000-000000000000/b/22222222"
	b.AllocId = "0000bbbb-0000-0000-0000-000000000000"
	e.start(a)
	e.start(b)
	claims := map[string]string{} // owner alloc -> sandbox
	e.pool.mu.Lock()
	for id, c := range e.pool.claims {
		claims[c.Owner.AllocID] = id
	}
	e.pool.mu.Unlock()
	sa, sb := claims[a.AllocId], claims[b.AllocId]
	if sa == "" || sb == "" || sa == sb {
		t.Fatalf("sandboxes %q and %q: want one each, distinct", sa, sb)
	}
	for _, tc := range []*drivers.TaskConfig{a, b, a} {
		if _, err := e.c.Driver.ExecTask(context.Background(), &drivers.ExecTaskRequest{TaskId: tc.Id, Command: []string{"id"}}); err != nil {
			t.Fatal(err)
		}
	}
	e.runner.mu.Lock()
	got := strings.Join(e.runner.execs, " ")
	e.runner.mu.Unlock()
	if want := strings.Join([]string{sa, sb, sa}, " "); got != want {
		t.Errorf("execs landed in %s, want %s", got, want)
	}
	if _, err := e.c.Driver.ExecTask(context.Background(), &drivers.ExecTaskRequest{TaskId: "0000cccc-0000-0000-0000-000000000000/c/3", Command: []string{"id"}}); err == nil {
		t.Error("exec into a task this driver does not run succeeded")
	}
}
