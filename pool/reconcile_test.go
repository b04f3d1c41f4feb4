package pool

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-pool/internal/nodeattr"
	"github.com/agentkernel/agentkernel-pool/pool/pooltest"
)

func writeFile(path, body string) error { return os.WriteFile(path, []byte(body), 0o600) }

// A claim record whose sandbox allocation no longer exists (this node's) is
// deleted; another node's record is left alone.
func TestReconcileDeletesLeakedClaim(t *testing.T) {
	m, srv := fakeManager(t, nil, Config{Name: "py", Size: 0, Max: 1})
	leaked := ClaimPath("py", "00000000-dead-4000-8000-000000000000")
	foreign := ClaimPath("py", "00000000-f0f0-4000-8000-000000000000")
	srv.PutVar(leaked, api.VariableItems{itemNode: pooltest.NodeID, itemJob: "agentkernel-pool-py-5c1a1e2b/dispatch-1-x"})
	srv.PutVar(foreign, api.VariableItems{itemNode: "other-node"})
	waitFor(t, 5*time.Second, "claims listed", func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		return len(m.inv.claims) == 2
	})
	m.reconcile(ctx(t, 5*time.Second))
	if len(srv.Vars(leaked)) != 0 {
		t.Error("leaked claim not deleted")
	}
	if len(srv.Vars(foreign)) != 1 {
		t.Error("another node's claim deleted")
	}
}

// A claimed sandbox whose owner allocation is gone or finished is purged
// with its claim; one whose owner runs is kept.
func TestReconcilePurgesClaimsOfGoneOwners(t *testing.T) {
	m, srv := fakeManager(t, nil, Config{Name: "py", Size: 3, Max: 3})
	waitFor(t, 5*time.Second, "3 warm", func() bool { return m.Stats()["py"].Warm == 3 })
	srv.AddAlloc(&api.Allocation{ID: "owner-running", ClientStatus: "running", DesiredStatus: "run",
		TaskStates: map[string]*api.TaskState{"agent": {State: "running"}}})
	srv.AddAlloc(&api.Allocation{ID: "owner-done", ClientStatus: "complete", DesiredStatus: "run"})
	srv.AddAlloc(&api.Allocation{ID: "owner-task-dead", ClientStatus: "running", DesiredStatus: "run",
		TaskStates: map[string]*api.TaskState{"agent": {State: "dead"}}})
	keep := claim(t, m, Owner{AllocID: "owner-running", TaskName: "agent"})
	done := claim(t, m, Owner{AllocID: "owner-done", TaskName: "agent"})
	dead := claim(t, m, Owner{AllocID: "owner-task-dead", TaskName: "agent"})
	// A Manager restart loses the local claim cache: reconcile reads records.
	m.mu.Lock()
	m.claimCache = map[string]*claimRecord{}
	m.mu.Unlock()
	waitFor(t, 5*time.Second, "claims listed", func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		return len(m.inv.claims) == 3
	})
	m.reconcile(ctx(t, 5*time.Second))
	if srv.Job(keep.JobID) == nil || len(srv.Vars(ClaimPath("py", keep.AllocID))) != 1 {
		t.Error("claim of a running owner removed")
	}
	for _, c := range []*Claim{done, dead} {
		if srv.Job(c.JobID) != nil || len(srv.Vars(ClaimPath("py", c.AllocID))) != 0 {
			t.Errorf("claim of finished owner %s not cleaned", c.Owner.AllocID)
		}
	}
	waitFor(t, 5*time.Second, "refilled", func() bool { s := m.Stats()["py"]; return s.Claimed == 1 && s.Warm == 2 })
}

// Unclaimed instances of a pool no longer configured are purged, then its
// template job.
func TestReconcileRemovesUnconfiguredPool(t *testing.T) {
	srv := pooltest.New()
	t.Cleanup(srv.Close)
	spec := jobspecFile(t, "job {}")
	m1 := newManager(t, srv, nil, Config{Name: "py", Jobspec: spec, Size: 1, Max: 2}, Config{Name: "go", Jobspec: spec, Size: 2, Max: 2})
	if err := m1.Start(ctx(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "go pool warm", func() bool { return m1.Stats()["go"].Warm == 2 && m1.Stats()["py"].Warm == 1 })
	m1.Stop()

	m2 := newManager(t, srv, nil, Config{Name: "py", Jobspec: spec, Size: 1, Max: 2})
	if err := m2.Start(ctx(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	goParent := ParentJobID("go", pooltest.NodeID)
	waitFor(t, 5*time.Second, "go pool gone", func() bool {
		m2.reconcile(ctx(t, 5*time.Second))
		return len(srv.Children(goParent)) == 0 && srv.Job(goParent) == nil
	})
	if s := m2.Stats()["py"]; s.Warm != 1 {
		t.Fatalf("configured pool disturbed: %+v", s)
	}
}

// A new Manager sees exact counts as soon as Start returns.
func TestCountsExactAfterRestart(t *testing.T) {
	srv := pooltest.New()
	t.Cleanup(srv.Close)
	spec := jobspecFile(t, "job {}")
	m1 := newManager(t, srv, nil, Config{Name: "py", Jobspec: spec, Size: 3, Max: 6})
	if err := m1.Start(ctx(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "3 warm", func() bool { return m1.Stats()["py"].Warm == 3 })
	claim(t, m1, Owner{})
	claim(t, m1, Owner{})
	waitFor(t, 5*time.Second, "refilled", func() bool { s := m1.Stats()["py"]; return s.Warm == 3 && s.Claimed == 2 })
	m1.Stop()
	srv.SetStartDelay(time.Hour) // anything dispatched now would stay starting

	m2 := newManager(t, srv, nil, Config{Name: "py", Jobspec: spec, Size: 3, Max: 6})
	if err := m2.Start(ctx(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if got, want := m2.Stats()["py"], (Stats{Size: 3, Max: 6, Target: 3, Warm: 3, Claimed: 2}); got != want {
		t.Fatalf("after restart %+v, want %+v", got, want)
	}
	time.Sleep(200 * time.Millisecond)
	if got := len(srv.Children(ParentJobID("py", pooltest.NodeID))); got != 5 {
		t.Fatalf("restart dispatched more: %d children, want 5", got)
	}
}

func TestStatusAndPrint(t *testing.T) {
	m, srv := fakeManager(t, nil, Config{Name: "py", Size: 2, Max: 4})
	waitFor(t, 5*time.Second, "2 warm", func() bool { return m.Stats()["py"].Warm == 2 })
	claim(t, m, Owner{})
	waitFor(t, 5*time.Second, "refilled", func() bool { s := m.Stats()["py"]; return s.Warm == 2 && s.Claimed == 1 })
	st, err := Status(ctx(t, 5*time.Second), srv.Client(), "")
	if err != nil {
		t.Fatal(err)
	}
	want := NodePoolStatus{NodeID: pooltest.NodeID, NodeName: "fake-node", Pool: "py", Stats: Stats{Size: 2, Max: 4, Warm: 2, Claimed: 1}}
	if len(st) != 1 || st[0] != want {
		t.Fatalf("status %+v, want %+v", st, want)
	}
	var b bytes.Buffer
	if err := PrintStatus(&b, st); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 2 || strings.Join(strings.Fields(lines[0]), " ") != "NODE POOL SIZE TARGET MAX WARM PREPARING STARTING CLAIMED FAILED" ||
		strings.Join(strings.Fields(lines[1]), " ") != "fake-node py 2 - 4 2 0 0 1 0" {
		t.Fatalf("table without the node's target attribute:\n%s", b.String())
	}

	// The plugin on the node publishes the pool's demand-driven target.
	srv.SetDriverAttr(pooltest.NodeID, nodeattr.Driver, nodeattr.Pool("py", nodeattr.Target), "3")
	st, err = Status(ctx(t, 5*time.Second), srv.Client(), "")
	if err != nil || len(st) != 1 || st[0].Target != 3 || !st[0].HasTarget {
		t.Fatalf("status with the target attribute: %+v, %v", st, err)
	}
	b.Reset()
	if err := PrintStatus(&b, st); err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSpace(b.String()), "\n"); strings.Join(strings.Fields(lines[1]), " ") != "fake-node py 2 3 4 2 0 0 1 0" {
		t.Fatalf("table with target 3:\n%s", b.String())
	}
}

func claim(t *testing.T, m *Manager, o Owner) *Claim {
	t.Helper()
	c, err := m.Claim(ctx(t, 5*time.Second), "py", o)
	if err != nil {
		t.Fatalf("claim: %v", err)
	}
	return c
}

// A task start that claimed but never launched (its plugin died) leaves a
// claim whose owner still runs; the task's next start claims again. The
// older claim of the same owner task is freed at once by the new claim
// when its record is known, and by reconcile when it is not. Claims of
// another task of the same allocation are kept.
func TestSupersededClaimsFreed(t *testing.T) {
	m, srv := fakeManager(t, nil, Config{Name: "py", Size: 3, Max: 6})
	waitFor(t, 5*time.Second, "3 warm", func() bool { return m.Stats()["py"].Warm == 3 })
	srv.AddAlloc(&api.Allocation{ID: "owner", ClientStatus: "running", DesiredStatus: "run",
		TaskStates: map[string]*api.TaskState{"agent": {State: "pending"}, "sidecar": {State: "running"}}})
	held := func(c *Claim) bool {
		return srv.Job(c.JobID) != nil && len(srv.Vars(ClaimPath("py", c.AllocID))) == 1
	}

	// Known record: freed by the newer claim itself.
	first := claim(t, m, Owner{AllocID: "owner", TaskName: "agent", TaskID: "owner/agent/1"})
	sidecar := claim(t, m, Owner{AllocID: "owner", TaskName: "sidecar", TaskID: "owner/sidecar/1"})
	second := claim(t, m, Owner{AllocID: "owner", TaskName: "agent", TaskID: "owner/agent/2"})
	waitFor(t, 5*time.Second, "first claim freed", func() bool { return !held(first) })
	if !held(second) || !held(sidecar) {
		t.Fatal("newest claim or another task's claim freed")
	}

	// Unknown record (a new plugin process): freed by reconcile.
	m.mu.Lock()
	m.claimCache = map[string]*claimRecord{}
	m.mu.Unlock()
	third := claim(t, m, Owner{AllocID: "owner", TaskName: "agent", TaskID: "owner/agent/3"})
	time.Sleep(100 * time.Millisecond)
	if !held(second) {
		t.Fatal("claim freed without its record being read")
	}
	waitFor(t, 5*time.Second, "claims listed", func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		return len(m.inv.claims) == 3
	})
	m.reconcile(ctx(t, 5*time.Second))
	if held(second) {
		t.Error("superseded claim not freed by reconcile")
	}
	if !held(third) || !held(sidecar) {
		t.Error("reconcile freed a claim in use")
	}
	waitFor(t, 5*time.Second, "refilled", func() bool { s := m.Stats()["py"]; return s.Claimed == 2 && s.Warm == 3 })
}

// A start that never launched holds a claim within max. When the owner task
// starts again, its new claim begins by freeing that one, so the new claim
// gets a sandbox even on a pool that is at max.
func TestSupersededClaimFreesItsSlot(t *testing.T) {
	m, srv := fakeManager(t, nil, Config{Name: "py", Size: 1, Max: 1})
	waitFor(t, 5*time.Second, "1 warm", func() bool { return m.Stats()["py"].Warm == 1 })
	srv.AddAlloc(&api.Allocation{ID: "owner", ClientStatus: "running", DesiredStatus: "run",
		TaskStates: map[string]*api.TaskState{"agent": {State: "pending"}}})
	orphan := claim(t, m, Owner{AllocID: "owner", TaskName: "agent", TaskID: "owner/agent/1"})
	again := claim(t, m, Owner{AllocID: "owner", TaskName: "agent", TaskID: "owner/agent/2"})
	if again.AllocID == orphan.AllocID {
		t.Fatal("the new claim got the orphaned sandbox")
	}
	if srv.Job(orphan.JobID) != nil || len(srv.Vars(ClaimPath("py", orphan.AllocID))) != 0 {
		t.Error("orphaned claim not freed")
	}
}
