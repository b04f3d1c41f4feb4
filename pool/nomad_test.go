package pool

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-pool/internal/nomadtest"
)

// Tests against a real Nomad agent (nomad agent -dev on loopback, raw_exec),
// skipped when there is no nomad binary (NOMAD_BIN, else PATH). They share
// one agent; each subtest leaves the node empty for the next.

// rawExecJobspec is a warm template that starts in well under a second.
func rawExecJobspec(t testing.TB, sleepArg string) string {
	t.Helper()
	body := fmt.Sprintf(`job "sandbox" {
  group "sandbox" {
    task "sandbox" {
      driver = "raw_exec"
      config {
        command = "/bin/sleep"
        args    = [%q]
      }
      resources {
        cpu    = 20
        memory = 16
      }
    }
  }
}
`, sleepArg)
	p := filepath.Join(t.TempDir(), "sandbox.nomad.hcl")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// agentManager starts a Manager on the agent's node; Stop runs at cleanup.
func agentManager(t testing.TB, a *nomadtest.Agent, cfgs ...Config) *Manager {
	t.Helper()
	return clientManager(t, a.Client, a.NodeID, cfgs...)
}

// clientManager starts a Manager on node through client, its warm jobs in
// the default namespace.
func clientManager(t testing.TB, client *api.Client, nodeID string, cfgs ...Config) *Manager {
	t.Helper()
	return namespaceManager(t, client, nodeID, "", cfgs...)
}

// namespaceManager starts a Manager on node through client, its warm jobs
// and claim records in namespace ns.
func namespaceManager(t testing.TB, client *api.Client, nodeID, ns string, cfgs ...Config) *Manager {
	t.Helper()
	level := hclog.Info
	if _, bench := t.(*testing.B); bench && os.Getenv("POOL_DEBUG") == "" {
		level = hclog.Warn
	} else if testing.Verbose() {
		level = hclog.Debug
	}
	mark := markLeaks()
	m, err := New(Options{Client: client, NodeID: nodeID, Namespace: ns, Pools: cfgs,
		Logger: hclog.New(&hclog.LoggerOptions{Name: "pool", Level: level, Output: tbWriter{t}})})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ctx(t, 30*time.Second)); err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() {
		m.Stop()
		if _, bench := t.(*testing.B); !bench {
			noLeaks(t, mark)
		}
	})
	return m
}

// truth counts from Nomad directly (not from a Manager). Nomad's lists have
// no warm target: Status reads it from the node attribute the driver
// publishes, and no driver runs here, so truth's Target is the Manager's,
// the one count it cannot check.
func truth(t testing.TB, a *nomadtest.Agent, pool string, m *Manager) Stats {
	t.Helper()
	st, err := Status(ctx(t, 10*time.Second), a.Client, "")
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	for _, s := range st {
		if s.Pool == pool && s.NodeID == a.NodeID {
			if s.HasTarget {
				t.Fatalf("pool %s: a target attribute on a node without the driver", pool)
			}
			s.Stats.Target = m.Stats()[pool].Target
			return s.Stats
		}
	}
	return Stats{}
}

// alive counts this pool's allocations that run or are about to.
func alive(ctx context.Context, a *nomadtest.Agent, pool string) (int, error) {
	q := (&api.QueryOptions{Filter: fmt.Sprintf(`JobID matches "^%s/dispatch-" and (ClientStatus == "pending" or ClientStatus == "running")`,
		ParentJobID(pool, a.NodeID))}).WithContext(ctx)
	allocs, _, err := a.Client.Allocations().List(q)
	return len(allocs), err
}

// children lists this pool's dispatched jobs in Nomad.
func children(t testing.TB, a *nomadtest.Agent, pool string) []*api.JobListStub {
	t.Helper()
	q := (&api.QueryOptions{Prefix: ParentJobID(pool, a.NodeID) + dispatchSep}).WithContext(ctx(t, 10*time.Second))
	jobs, _, err := a.Client.Jobs().ListOptions(&api.JobListOptions{Fields: &api.JobListFields{Meta: true}}, q)
	if err != nil {
		t.Fatal(err)
	}
	return jobs
}

// claimRecords counts claim records of pool in Nomad.
func claimRecords(t testing.TB, a *nomadtest.Agent, pool string) int {
	t.Helper()
	vars, _, err := a.Client.Variables().PrefixList(claimRoot+pool+"/", (&api.QueryOptions{}).WithContext(ctx(t, 10*time.Second)))
	if err != nil {
		t.Fatal(err)
	}
	return len(vars)
}

// purgeAll removes everything of pool from Nomad, for the next subtest.
func purgeAll(t testing.TB, a *nomadtest.Agent, pool string) {
	t.Helper()
	c := ctx(t, time.Minute)
	q := (&api.QueryOptions{Prefix: ParentJobID(pool, a.NodeID)}).WithContext(c)
	jobs, _, err := a.Client.Jobs().List(q)
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range jobs {
		if _, _, err := a.Client.Jobs().Deregister(j.ID, true, (&api.WriteOptions{}).WithContext(c)); err != nil {
			t.Fatal(err)
		}
	}
	vars, _, _ := a.Client.Variables().PrefixList(claimRoot+pool+"/", (&api.QueryOptions{}).WithContext(c))
	for _, v := range vars {
		_, _ = a.Client.Variables().Delete(v.Path, (&api.WriteOptions{}).WithContext(c))
	}
	waitFor(t, time.Minute, "pool allocations stopped", func() bool {
		n, err := alive(c, a, pool)
		return err == nil && n == 0
	})
}

func TestNomad(t *testing.T) {
	a := nomadtest.Start(t, nomadtest.Options{})
	t.Run("FillsToSizeAndStays", func(t *testing.T) { nomadFills(t, a) })
	t.Run("ConcurrentClaims", func(t *testing.T) { nomadConcurrentClaims(t, a) })
	t.Run("RestartMidway", func(t *testing.T) { nomadRestart(t, a) })
	t.Run("TemplateChange", func(t *testing.T) { nomadTemplateChange(t, a) })
	t.Run("ReconcileLeaks", func(t *testing.T) { nomadReconcile(t, a) })
}

func nomadFills(t *testing.T, a *nomadtest.Agent) {
	t.Cleanup(func() { purgeAll(t, a, "fill") }) // after the Manager stops
	m := agentManager(t, a, Config{Name: "fill", Jobspec: rawExecJobspec(t, "3600"), Size: 3, Max: 5})
	waitFor(t, time.Minute, "3 warm", func() bool { s := m.Stats()["fill"]; return s.Warm == 3 && s.Starting == 0 })
	time.Sleep(3 * time.Second)
	if got, want := m.Stats()["fill"], (Stats{Size: 3, Max: 5, Warm: 3, Target: 3}); got != want {
		t.Fatalf("stats %+v, want %+v", got, want)
	}
	if n := len(children(t, a, "fill")); n != 3 {
		t.Fatalf("%d dispatched jobs in Nomad, want 3", n)
	}
	if got := truth(t, a, "fill", m); got.Warm != 3 || got.Starting+got.Claimed+got.Failed != 0 {
		t.Fatalf("nomad says %+v", got)
	}
}

func nomadConcurrentClaims(t *testing.T, a *nomadtest.Agent) {
	t.Cleanup(func() { purgeAll(t, a, "burst") }) // after the Manager stops
	const size, max, claimers = 5, 60, 50
	m := agentManager(t, a, Config{Name: "burst", Jobspec: rawExecJobspec(t, "3600"), Size: size, Max: max})
	waitFor(t, time.Minute, "5 warm", func() bool { return m.Stats()["burst"].Warm == size })

	// Sample what runs in Nomad throughout the burst.
	var peak atomic.Int64
	sampleCtx, stopSampling := context.WithCancel(context.Background())
	var sampler sync.WaitGroup
	sampler.Go(func() {
		for sampleCtx.Err() == nil {
			if n, err := alive(sampleCtx, a, "burst"); err == nil && int64(n) > peak.Load() {
				peak.Store(int64(n))
			}
			time.Sleep(20 * time.Millisecond)
		}
	})

	claims := make([]*Claim, claimers)
	errs := make([]error, claimers)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range claimers {
		wg.Go(func() {
			claims[i], errs[i] = m.Claim(ctx(t, 2*time.Minute), "burst", Owner{AllocID: fmt.Sprintf("owner-%d", i)})
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	seen := map[string]int{}
	hits := 0
	for i, err := range errs {
		if err != nil {
			t.Errorf("claimer %d: %v", i, err)
			continue
		}
		if j, dup := seen[claims[i].AllocID]; dup {
			t.Errorf("allocation %s handed to claimers %d and %d", claims[i].AllocID, j, i)
		}
		seen[claims[i].AllocID] = i
		if claims[i].Hit {
			hits++
		}
	}
	waitFor(t, time.Minute, "refill after burst", func() bool {
		s := m.Stats()["burst"]
		return s.Claimed == claimers && s.Warm == size && s.Starting == 0
	})
	stopSampling()
	sampler.Wait()
	t.Logf("%d claims in %s: %d hits, %d waited; peak %d allocations alive (max %d)", claimers, elapsed.Round(time.Millisecond), hits, claimers-hits, peak.Load(), max)
	if peak.Load() > max {
		t.Errorf("%d allocations alive at peak, max is %d", peak.Load(), max)
	}
	if n := claimRecords(t, a, "burst"); n != claimers {
		t.Errorf("%d claim records in Nomad, want %d", n, claimers)
	}

	for _, c := range claims {
		if c != nil {
			if err := m.Release(ctx(t, 30*time.Second), c); err != nil {
				t.Errorf("release: %v", err)
			}
		}
	}
	waitFor(t, time.Minute, "only the warm target left", func() bool {
		s := m.Stats()["burst"]
		return s.Warm == size && s.Claimed == 0 && s.Starting == 0 && len(children(t, a, "burst")) == size && claimRecords(t, a, "burst") == 0
	})
}

func nomadRestart(t *testing.T, a *nomadtest.Agent) {
	t.Cleanup(func() { purgeAll(t, a, "restart") }) // after the Manager stops
	spec := rawExecJobspec(t, "3600")
	cfg := Config{Name: "restart", Jobspec: spec, Size: 3, Max: 8}
	m1 := agentManager(t, a, cfg)
	waitFor(t, time.Minute, "3 warm", func() bool { return m1.Stats()["restart"].Warm == 3 })
	c1, err := m1.Claim(ctx(t, 30*time.Second), "restart", Owner{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m1.Claim(ctx(t, 30*time.Second), "restart", Owner{}); err != nil {
		t.Fatal(err)
	}
	// Stop mid-way: replacements are being dispatched and started.
	m1.Stop()

	m2 := agentManager(t, a, cfg)
	// Exact at once: the new Manager's counts equal Nomad's. Instances may
	// move from starting to warm between the two reads, so compare those
	// two together (and retry once for a move in flight).
	var got, want Stats
	for range 2 {
		got, want = m2.Stats()["restart"], truth(t, a, "restart", m2)
		if got.Claimed == want.Claimed && got.Warm+got.Starting == want.Warm+want.Starting && got.Failed == want.Failed {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got.Claimed != want.Claimed || got.Warm+got.Starting != want.Warm+want.Starting || got.Failed != want.Failed {
		t.Fatalf("right after restart: manager %+v, nomad %+v", got, want)
	}
	t.Logf("right after restart: manager %+v, nomad %+v", got, want)
	if got.Claimed != 2 || got.Warm+got.Starting > 3 {
		t.Fatalf("after restart %+v: want 2 claimed, at most 3 warm or starting", got)
	}
	if _, err := m2.readVariable(ctx(t, 10*time.Second), ClaimPath("restart", c1.AllocID)); err != nil {
		t.Fatalf("claim record lost across restart: %v", err)
	}
	waitFor(t, time.Minute, "3 warm, 2 claimed", func() bool {
		s := m2.Stats()["restart"]
		return s.Warm == 3 && s.Claimed == 2 && s.Starting == 0
	})
	time.Sleep(time.Second)
	if n := len(children(t, a, "restart")); n != 5 {
		t.Fatalf("%d dispatched jobs after restart, want 5 (no over-creation)", n)
	}
}

func nomadTemplateChange(t *testing.T, a *nomadtest.Agent) {
	t.Cleanup(func() { purgeAll(t, a, "tmpl") }) // after the Manager stops
	spec := rawExecJobspec(t, "3600")
	m := agentManager(t, a, Config{Name: "tmpl", Jobspec: spec, Size: 2, Max: 5})
	waitFor(t, time.Minute, "2 warm", func() bool { return m.Stats()["tmpl"].Warm == 2 })
	c, err := m.Claim(ctx(t, 30*time.Second), "tmpl", Owner{})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "2 warm again", func() bool { return m.Stats()["tmpl"].Warm == 2 })
	oldHash := m.pools["tmpl"].tmpl.hash

	body, _ := os.ReadFile(spec)
	if err := os.WriteFile(spec, []byte(strings.Replace(string(body), `"3600"`, `"3601"`, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	m.reconcile(ctx(t, 30*time.Second))
	m.mu.Lock()
	newHash := m.pools["tmpl"].tmpl.hash
	m.mu.Unlock()
	if newHash == oldHash {
		t.Fatal("template hash unchanged after edit")
	}
	waitFor(t, time.Minute, "unclaimed replaced by the new template", func() bool {
		var fresh, stale int
		for _, j := range children(t, a, "tmpl") {
			switch {
			case j.Meta[metaHash] == newHash && j.Status == "running":
				fresh++
			case j.ID != c.JobID:
				stale++
			}
		}
		s := m.Stats()["tmpl"]
		return fresh == 2 && stale == 0 && s.Warm == 2 && s.Claimed == 1
	})
	a2, _, err := a.Client.Allocations().Info(c.AllocID, (&api.QueryOptions{}).WithContext(ctx(t, 10*time.Second)))
	if err != nil || a2.ClientStatus != "running" || a2.DesiredStatus != "run" {
		t.Fatalf("claimed instance touched by the template change: %v %+v", err, a2)
	}
}

func nomadReconcile(t *testing.T, a *nomadtest.Agent) {
	t.Cleanup(func() { purgeAll(t, a, "leak") }) // after the Manager stops
	m := agentManager(t, a, Config{Name: "leak", Jobspec: rawExecJobspec(t, "3600"), Size: 2, Max: 5})
	waitFor(t, time.Minute, "2 warm", func() bool { return m.Stats()["leak"].Warm == 2 })

	// A claimed allocation whose owner is gone (a crashed driver never
	// released it) and a claim record whose allocation never existed.
	c, err := m.Claim(ctx(t, 30*time.Second), "leak", Owner{AllocID: "9d0c2a56-0000-4000-8000-000000000000", TaskName: "agent"})
	if err != nil {
		t.Fatal(err)
	}
	ghost := ClaimPath("leak", "9d0c2a56-1111-4000-8000-000000000000")
	if _, _, err := a.Client.Variables().Create(&api.Variable{Path: ghost, Items: api.VariableItems{
		itemNode: a.NodeID, itemPool: "leak", itemJob: ParentJobID("leak", a.NodeID) + "/dispatch-0-gone"}},
		(&api.WriteOptions{}).WithContext(ctx(t, 10*time.Second))); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "ghost claim listed", func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		return len(m.inv.claims) == 2
	})
	m.reconcile(ctx(t, 30*time.Second))
	if n := claimRecords(t, a, "leak"); n != 0 {
		t.Fatalf("%d claim records left after reconcile, want 0", n)
	}
	if j, _, err := a.Client.Jobs().Info(c.JobID, (&api.QueryOptions{}).WithContext(ctx(t, 10*time.Second))); err == nil {
		t.Fatalf("leaked claimed job still there: %s", *j.Status)
	}
	waitFor(t, time.Minute, "back to the warm target", func() bool {
		s := m.Stats()["leak"]
		return s.Warm == 2 && s.Claimed == 0 && s.Starting == 0 && len(children(t, a, "leak")) == 2
	})
}

type tbWriter struct{ t testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
