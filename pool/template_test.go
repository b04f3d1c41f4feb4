package pool

import (
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-pool/pool/pooltest"
)

// parseByBody makes the fake's parse endpoint answer by jobspec content.
func parseByBody(jobs map[string]func() *api.Job) func(string) (*api.Job, error) {
	return func(hcl string) (*api.Job, error) {
		for marker, job := range jobs {
			if strings.Contains(hcl, marker) {
				return job(), nil
			}
		}
		return pooltest.DefaultJob(hcl)
	}
}

func TestBadTemplatesNamePoolAndField(t *testing.T) {
	twoGroups := func() *api.Job {
		j, _ := pooltest.DefaultJob("")
		j.TaskGroups = append(j.TaskGroups, &api.TaskGroup{Name: new("b"), Tasks: j.TaskGroups[0].Tasks})
		return j
	}
	twoTasks := func() *api.Job {
		j, _ := pooltest.DefaultJob("")
		j.TaskGroups[0].Tasks = append(j.TaskGroups[0].Tasks, &api.Task{Name: "other"})
		return j
	}
	count3 := func() *api.Job {
		j, _ := pooltest.DefaultJob("")
		j.TaskGroups[0].Count = new(3)
		return j
	}
	periodic := func() *api.Job {
		j, _ := pooltest.DefaultJob("")
		j.Periodic = &api.PeriodicConfig{Specs: []string{"@daily"}}
		return j
	}
	srv := pooltest.New()
	t.Cleanup(srv.Close)
	srv.SetParseFunc(parseByBody(map[string]func() *api.Job{
		"TWO_GROUPS": twoGroups, "TWO_TASKS": twoTasks, "COUNT3": count3, "PERIODIC": periodic,
	}))
	m := newManager(t, srv, nil,
		Config{Name: "ok", Size: 1, Max: 1},
		Config{Name: "groups", Jobspec: jobspecFile(t, "# TWO_GROUPS"), Size: 1, Max: 1},
		Config{Name: "tasks", Jobspec: jobspecFile(t, "# TWO_TASKS"), Size: 1, Max: 1},
		Config{Name: "count", Jobspec: jobspecFile(t, "# COUNT3"), Size: 1, Max: 1},
		Config{Name: "periodic", Jobspec: jobspecFile(t, "# PERIODIC"), Size: 1, Max: 1},
		Config{Name: "missing", Jobspec: "/nonexistent/pool.hcl", Size: 1, Max: 1},
		Config{Name: "small", Size: 3, Max: 2},
		Config{Name: "bad.name", Size: 1, Max: 1},
	)
	err := m.Start(ctx(t, 10*time.Second))
	if err == nil {
		t.Fatal("start with bad pools returned no error")
	}
	for _, want := range []string{
		`pool "groups"`, "group: want exactly one group, found 2",
		`pool "tasks"`, `task: want exactly one task in group "sandbox", found 2`,
		`pool "count"`, "count must be 1",
		`pool "periodic"`, "periodic",
		`pool "missing": read jobspec`,
		`pool "small": max 2 is less than size 3`,
		`pool "bad.name": name: want`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("start error lacks %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), `pool "ok"`) {
		t.Errorf("good pool reported bad: %v", err)
	}
	// The good pool works; the bad ones say why in Stats and Claim.
	waitFor(t, 5*time.Second, "good pool warm", func() bool { return m.Stats()["ok"].Warm == 1 })
	if s := m.Stats()["groups"]; !strings.Contains(s.Error, "want exactly one group") {
		t.Errorf("stats of bad pool: %+v", s)
	}
	if _, err := m.Claim(ctx(t, time.Second), "small", Owner{}); err == nil || !strings.Contains(err.Error(), "not usable") {
		t.Errorf("claim from bad pool: %v", err)
	}
}

func TestRegisterIsIdempotent(t *testing.T) {
	srv := pooltest.New()
	t.Cleanup(srv.Close)
	spec := jobspecFile(t, "job {}")
	for range 2 {
		m := newManager(t, srv, nil, Config{Name: "py", Jobspec: spec, Size: 0, Max: 1})
		if err := m.Start(ctx(t, 5*time.Second)); err != nil {
			t.Fatal(err)
		}
		m.Stop()
	}
	if n := srv.Calls(http.MethodPut, "/v1/jobs"); n != 3 { // 2 parses + 1 register
		t.Fatalf("%d PUTs under /v1/jobs, want 2 parses and 1 register", n)
	}
}

// A changed template re-registers; unclaimed instances of the old one are
// replaced, claimed ones are left alone.
func TestTemplateChangeReplacesUnclaimedOnly(t *testing.T) {
	m, srv := fakeManager(t, nil, Config{Name: "py", Size: 2, Max: 5})
	waitFor(t, 5*time.Second, "2 warm", func() bool { return m.Stats()["py"].Warm == 2 })
	c, err := m.Claim(ctx(t, time.Second), "py", Owner{})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "2 warm again", func() bool { return m.Stats()["py"].Warm == 2 })
	parent := ParentJobID("py", pooltest.NodeID)
	oldHash := srv.Job(parent).Meta[metaHash]
	old := srv.Children(parent)

	srv.SetParseFunc(func(string) (*api.Job, error) {
		j, _ := pooltest.DefaultJob("")
		j.TaskGroups[0].Tasks[0].Env = map[string]string{"V": "2"}
		return j, nil
	})
	p := m.pools["py"]
	if err := writeFile(p.cfg.Jobspec, "job { v2 }"); err != nil {
		t.Fatal(err)
	}
	m.reconcile(ctx(t, 5*time.Second))
	newHash := srv.Job(parent).Meta[metaHash]
	if newHash == oldHash {
		t.Fatal("template not re-registered")
	}
	waitFor(t, 5*time.Second, "2 warm of the new template", func() bool {
		warm := 0
		for _, id := range srv.Children(parent) {
			if srv.Job(id).Meta[metaHash] == newHash {
				warm++
			}
		}
		s := m.Stats()["py"]
		return warm == 2 && s.Warm == 2 && s.Claimed == 1 && len(srv.Children(parent)) == 3
	})
	if srv.Job(c.JobID) == nil || srv.Job(c.JobID).Meta[metaHash] != oldHash {
		t.Fatal("claimed instance of the old template was touched")
	}
	for _, id := range old {
		if id != c.JobID && srv.Job(id) != nil {
			t.Errorf("unclaimed old instance %s not replaced", id)
		}
	}
}

func TestDispatchFailureBacksOff(t *testing.T) {
	srv := pooltest.New()
	t.Cleanup(srv.Close)
	srv.Inject(pooltest.Fault{Method: http.MethodPut, Path: "/v1/job/", Status: 500})
	m := newManager(t, srv, nil, Config{Name: "py", Size: 2, Max: 2})
	if err := m.Start(ctx(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	// 2 dispatches x 4 attempts, then a backoff of 0.25-0.5s, then at most
	// one more round: nowhere near a tight loop.
	if n := srv.Calls(http.MethodPut, "/v1/job/"); n > 24 {
		t.Fatalf("%d dispatch attempts in 1.5s: no backoff", n)
	}
	m.mu.Lock()
	last := m.pools["py"].lastErr
	m.mu.Unlock()
	if last == nil || !strings.Contains(last.Error(), `dispatch warm instance of pool "py"`) {
		t.Fatalf("last error: %v", last)
	}
	srv.Clear()
	waitFor(t, 5*time.Second, "recovery to 2 warm", func() bool { return m.Stats()["py"].Warm == 2 })
}

func TestDeadWarmInstanceReplaced(t *testing.T) {
	m, srv := fakeManager(t, nil, Config{Name: "py", Size: 2, Max: 3})
	waitFor(t, 5*time.Second, "2 warm", func() bool { return m.Stats()["py"].Warm == 2 })
	var victim, victimJob string
	for id, job := range srv.LiveAllocs() {
		victim, victimJob = id, job
		break
	}
	srv.FailAlloc(victim)
	waitFor(t, 5*time.Second, "dead one purged and replaced", func() bool {
		s := m.Stats()["py"]
		return srv.Job(victimJob) == nil && s.Warm == 2 && s.Failed == 0
	})
}

func TestWatchFailureIsVisibleAndRecovers(t *testing.T) {
	m, srv := fakeManager(t, nil, Config{Name: "py", Size: 1, Max: 2})
	waitFor(t, 5*time.Second, "1 warm", func() bool { return m.Stats()["py"].Warm == 1 })
	srv.Inject(pooltest.Fault{Method: http.MethodGet, Path: "/v1/allocations", Status: 503})
	srv.FailAlloc(firstAlloc(srv)) // wakes the blocked query into the fault
	waitFor(t, 5*time.Second, "health error", func() bool {
		err := m.Health()
		return err != nil && strings.Contains(err.Error(), "watch allocations")
	})
	srv.Clear()
	waitFor(t, 5*time.Second, "healthy and refilled", func() bool { return m.Health() == nil && m.Stats()["py"].Warm == 1 })
}

func TestClaimBeforeStartAndAfterStop(t *testing.T) {
	srv := pooltest.New()
	t.Cleanup(srv.Close)
	m := newManager(t, srv, nil, Config{Name: "py", Size: 0, Max: 1})
	if _, err := m.Claim(ctx(t, time.Second), "py", Owner{}); err == nil || !strings.Contains(err.Error(), "not started") {
		t.Fatalf("claim before start: %v", err)
	}
	if err := m.Start(ctx(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	m.Stop()
	m.Stop()
	if _, err := m.Claim(ctx(t, time.Second), "py", Owner{}); !errors.Is(err, ErrStopped) {
		t.Fatalf("claim after stop: %v", err)
	}
}

func firstAlloc(srv *pooltest.Server) string {
	for id := range srv.LiveAllocs() {
		return id
	}
	return ""
}

// Instances that die right after starting (a broken template) are purged
// and redispatched with growing pauses, and a waiting claim says why.
func TestFailingInstancesBackOff(t *testing.T) {
	srv := pooltest.New()
	t.Cleanup(srv.Close)
	srv.SetFailStart(true)
	m := newManager(t, srv, nil, Config{Name: "py", Size: 1, Max: 2})
	if err := m.Start(ctx(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	_, err := m.Claim(ctx(t, 1500*time.Millisecond), "py", Owner{})
	if err == nil || !strings.Contains(err.Error(), "allocation failed") { // Nomad's reason, failing or timed out
		t.Fatalf("claim on a failing pool: %v", err)
	}
	// Two at first (size + the waiting claim), then one at a time, paused
	// 0.5-1s, then 1-2s...: a handful of dispatches in 1.5s, not hundreds.
	if n := srv.Calls(http.MethodPut, "/v1/job/"); n > 14 {
		t.Fatalf("%d dispatches in 1.5s of failing instances", n)
	}
	srv.SetFailStart(false)
	waitFor(t, 10*time.Second, "recovery", func() bool { return m.Stats()["py"].Warm == 1 })
}

func TestOnChangeCalledWhenCountsChange(t *testing.T) {
	srv := pooltest.New()
	t.Cleanup(srv.Close)
	changes := make(chan struct{}, 100)
	m := newManager(t, srv, nil, Config{Name: "py", Size: 1, Max: 1})
	m.onChange = func() { changes <- struct{}{} }
	if err := m.Start(ctx(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "warm", func() bool { return m.Stats()["py"].Warm == 1 })
	select {
	case <-changes:
	case <-time.After(time.Second):
		t.Fatal("OnChange not called while the pool filled")
	}
}

// The API is down when the Manager starts: Start reports it, and the pool
// starts working soon after the API is back, without a restart.
func TestStartWhileAPIDown(t *testing.T) {
	srv := pooltest.New()
	t.Cleanup(srv.Close)
	srv.Inject(pooltest.Fault{Status: 503})
	m := newManager(t, srv, func(m *Manager) { m.reconcileEvery = 100 * time.Millisecond },
		Config{Name: "py", Size: 1, Max: 1})
	err := m.Start(ctx(t, 2*time.Second))
	if err == nil || !strings.Contains(err.Error(), `pool "py"`) || !strings.Contains(err.Error(), "503") {
		t.Fatalf("start with the API down: %v", err)
	}
	if m.Health() == nil {
		t.Fatal("healthy with the API down")
	}
	srv.Clear()
	waitFor(t, 10*time.Second, "pool working", func() bool {
		s := m.Stats()["py"]
		return s.Warm == 1 && s.Error == "" && m.Health() == nil
	})
}

// A plugin that starts before its node is registered (at agent boot) builds
// templates without the node's datacenter and node pool. Once the node can
// be read, the template gets them under the same template hash: the warm
// instances stay, and the next Manager (a plugin restart) adopts them
// instead of replacing the whole pool.
func TestNodeDefaultsKeepWarmInstances(t *testing.T) {
	srv := pooltest.New()
	t.Cleanup(srv.Close)
	srv.RemoveNode(pooltest.NodeID)
	spec := jobspecFile(t, "job {}")
	cfg := Config{Name: "py", Jobspec: spec, Size: 2, Max: 4}
	m1 := newManager(t, srv, func(m *Manager) { m.reconcileEvery = 100 * time.Millisecond }, cfg)
	if err := m1.Start(ctx(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "2 warm", func() bool { return m1.Stats()["py"].Warm == 2 })
	parent := ParentJobID("py", pooltest.NodeID)
	if j := srv.Job(parent); len(j.Datacenters) != 0 || deref(j.NodePool) != "" {
		t.Fatalf("template has datacenters %v and node pool %q before the node was known", j.Datacenters, deref(j.NodePool))
	}
	warm := srv.Children(parent)
	slices.Sort(warm)

	srv.AddNode(pooltest.NodeID, "fake-node")
	waitFor(t, 5*time.Second, "the template re-registered", func() bool { return len(srv.Job(parent).Datacenters) > 0 })
	j := srv.Job(parent)
	if !slices.Equal(j.Datacenters, []string{"dc1"}) || deref(j.NodePool) != "default" || j.Meta[metaNodeName] != "fake-node" {
		t.Errorf("template not completed with the node's defaults: datacenters %v, node pool %q, node name %q",
			j.Datacenters, deref(j.NodePool), j.Meta[metaNodeName])
	}
	m1.Stop()

	m2 := newManager(t, srv, nil, cfg)
	if err := m2.Start(ctx(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	registers := srv.Calls(http.MethodPut, "/v1/jobs") - srv.Calls(http.MethodPut, "/v1/jobs/parse")
	m2.reconcile(ctx(t, 5*time.Second))
	time.Sleep(200 * time.Millisecond) // let a wrong replenish act
	if got := srv.Children(parent); !slices.Equal(slices.Sorted(slices.Values(got)), warm) {
		t.Errorf("warm instances %v became %v: the restart replaced them", warm, got)
	}
	if n := srv.Calls(http.MethodPut, "/v1/jobs") - srv.Calls(http.MethodPut, "/v1/jobs/parse"); n != registers {
		t.Errorf("template registered again by an unchanged restart (%d registers, were %d)", n, registers)
	}
}
