package pool

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-pool/internal/nomadapi"
	"github.com/agentkernel/agentkernel-pool/pool/pooltest"
)

func TestPoolFillsToSizeAndStays(t *testing.T) {
	m, srv := fakeManager(t, nil, Config{Name: "py", Size: 3, Max: 5})
	waitFor(t, 5*time.Second, "3 warm", func() bool { s := m.Stats()["py"]; return s.Warm == 3 && s.Starting == 0 })
	time.Sleep(200 * time.Millisecond)
	parent := ParentJobID("py", pooltest.NodeID)
	if n := len(srv.Children(parent)); n != 3 {
		t.Fatalf("dispatched %d children, want 3", n)
	}
	got := m.Stats()["py"]
	if want := (Stats{Size: 3, Max: 5, Target: 3, Warm: 3}); got != want {
		t.Fatalf("stats %+v, want %+v", got, want)
	}

	// The template is what Nomad dispatches correctly: parameterized (the
	// ParameterizedJob field), dispatch meta declared, pinned to the node.
	j := srv.Job(parent)
	if j == nil || j.ParameterizedJob == nil || !slices.Contains(j.ParameterizedJob.MetaOptional, metaDispatcher) {
		t.Fatalf("template not parameterized with declared meta: %+v", j)
	}
	if *j.Type != "batch" || *j.TaskGroups[0].RestartPolicy.Attempts != 0 || *j.TaskGroups[0].ReschedulePolicy.Attempts != 0 {
		t.Fatalf("template type/restart/reschedule wrong: %+v", j)
	}
	pinned := slices.ContainsFunc(j.Constraints, func(c *api.Constraint) bool {
		return c.LTarget == "${node.unique.id}" && c.RTarget == pooltest.NodeID && c.Operand == "="
	})
	if !pinned || j.Meta[metaPool] != "py" || j.Meta[metaNode] != pooltest.NodeID || j.Meta[metaHash] == "" {
		t.Fatalf("template not pinned or meta missing: constraints %v meta %v", j.Constraints, j.Meta)
	}
}

func TestClaimHitMissAndRelease(t *testing.T) {
	m, srv := fakeManager(t, nil, Config{Name: "py", Size: 1, Max: 3})
	waitFor(t, 5*time.Second, "1 warm", func() bool { return m.Stats()["py"].Warm == 1 })

	owner := Owner{AllocID: "owner-1", TaskName: "agent", JobID: "sandbox-job", Namespace: "default"}
	c1, err := m.Claim(ctx(t, 5*time.Second), "py", owner)
	if err != nil {
		t.Fatalf("claim: %v", err)
	}
	if !c1.Hit || c1.TaskName != "sandbox" || c1.NodeID != pooltest.NodeID || c1.Owner != owner {
		t.Fatalf("unexpected claim %+v", c1)
	}
	rec := srv.Vars(ClaimPath("py", c1.AllocID))[ClaimPath("py", c1.AllocID)]
	if rec[itemOwnerAlloc] != "owner-1" || rec[itemJob] != c1.JobID || rec[itemNode] != pooltest.NodeID {
		t.Fatalf("claim record %v", rec)
	}
	if got := claimFromItems(rec); got.JobID != c1.JobID || got.Owner != owner || !got.ClaimedAt.Equal(c1.ClaimedAt) {
		t.Fatalf("claim read back from its record: %+v", got)
	}

	// Replenished at once; a second claim hits the replacement, or waits
	// for it: either way it gets a different allocation.
	c2, err := m.Claim(ctx(t, 5*time.Second), "py", Owner{AllocID: "owner-2"})
	if err != nil || c2.AllocID == c1.AllocID {
		t.Fatalf("second claim: %+v, %v", c2, err)
	}

	for range 2 { // idempotent
		if err := m.Release(ctx(t, time.Second), c1); err != nil {
			t.Fatalf("release: %v", err)
		}
	}
	if srv.Job(c1.JobID) != nil || len(srv.Vars(ClaimPath("py", c1.AllocID))) != 0 {
		t.Fatal("release left the job or the claim record")
	}
	if err := m.Release(ctx(t, time.Second), c2); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "back to 1 warm, nothing claimed", func() bool {
		s := m.Stats()["py"]
		return s.Warm == 1 && s.Claimed == 0 && s.Starting == 0
	})
}

func TestClaimMissDispatchesAndWaits(t *testing.T) {
	m, srv := fakeManager(t, nil, Config{Name: "py", Size: 0, Max: 2})
	srv.SetStartDelay(150 * time.Millisecond)
	c, err := m.Claim(ctx(t, 5*time.Second), "py", Owner{})
	if err != nil {
		t.Fatalf("claim on empty pool: %v", err)
	}
	if c.Hit || c.Waited < 100*time.Millisecond {
		t.Fatalf("claim should be a miss that waited: %+v", c)
	}
	time.Sleep(100 * time.Millisecond)
	if s := m.Stats()["py"]; s.Claimed != 1 || s.Warm+s.Starting != 0 {
		t.Fatalf("after a miss with size 0: %+v", s)
	}
}

func TestClaimTimeoutSaysWhatItWaitedFor(t *testing.T) {
	m, _ := fakeManager(t, nil, Config{Name: "py", Size: 1, Max: 1})
	waitFor(t, 5*time.Second, "1 warm", func() bool { return m.Stats()["py"].Warm == 1 })
	if _, err := m.Claim(ctx(t, time.Second), "py", Owner{}); err != nil {
		t.Fatal(err)
	}
	_, err := m.Claim(ctx(t, 200*time.Millisecond), "py", Owner{})
	if err == nil {
		t.Fatal("claim beyond max succeeded")
	}
	for _, want := range []string{`pool "py"`, "no warm allocation after waiting", "claimed 1", "max 1", "deadline exceeded"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("timeout error %q lacks %q", err, want)
		}
	}
}

func TestUnknownPoolListsPools(t *testing.T) {
	m, _ := fakeManager(t, nil, Config{Name: "py", Size: 0, Max: 1}, Config{Name: "go", Size: 0, Max: 1})
	_, err := m.Claim(ctx(t, time.Second), "rust", Owner{})
	if !errors.Is(err, ErrUnknownPool) || !strings.Contains(err.Error(), `"go", "py"`) {
		t.Fatalf("got %v", err)
	}
}

func TestConcurrentClaimsNeverShareAnAllocation(t *testing.T) {
	m, srv := fakeManager(t, nil, Config{Name: "py", Size: 5, Max: 60})
	srv.SetStartDelay(20 * time.Millisecond)
	waitFor(t, 5*time.Second, "5 warm", func() bool { return m.Stats()["py"].Warm == 5 })

	var mu sync.Mutex
	seen := map[string]bool{}
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for i := range 50 {
		wg.Go(func() {
			c, err := m.Claim(ctx(t, 10*time.Second), "py", Owner{AllocID: string(rune('a' + i))})
			if err != nil {
				errs <- err
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if seen[c.AllocID] {
				errs <- errors.New("allocation handed out twice: " + c.AllocID)
			}
			seen[c.AllocID] = true
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if live := len(srv.LiveAllocs()); live > 60 {
		t.Fatalf("%d allocations alive, max 60", live)
	}
	waitFor(t, 5*time.Second, "50 claimed + 5 warm", func() bool {
		s := m.Stats()["py"]
		t.Logf("stats %+v live %d", s, len(srv.LiveAllocs()))
		return s.Claimed == 50 && s.Warm == 5 && s.Starting == 0
	})
}

// Another process claims the first candidate between our view and our
// write: the CAS write conflicts and the claim moves on to the next one.
func TestClaimCASConflictMovesOn(t *testing.T) {
	m, srv := fakeManager(t, nil, Config{Name: "py", Size: 2, Max: 4})
	waitFor(t, 5*time.Second, "2 warm", func() bool { return m.Stats()["py"].Warm == 2 })
	var once sync.Once
	var stolen string
	srv.BeforeVarWrite(func(path, cas string) {
		once.Do(func() {
			stolen = path
			srv.PutVar(path, api.VariableItems{itemOwnerAlloc: "someone-else", itemNode: pooltest.NodeID})
		})
	})
	c, err := m.Claim(ctx(t, 5*time.Second), "py", Owner{AllocID: "me"})
	if err != nil {
		t.Fatalf("claim: %v", err)
	}
	if ClaimPath("py", c.AllocID) == stolen {
		t.Fatal("claimed the allocation someone else holds")
	}
	if got := srv.Vars(stolen)[stolen][itemOwnerAlloc]; got != "someone-else" {
		t.Fatalf("other claim overwritten: owner %q", got)
	}
}

// A 5xx on the claim write is retried; the nonce recognizes a retried write
// that had in fact succeeded.
func TestClaimRetries5xx(t *testing.T) {
	m, srv := fakeManager(t, nil, Config{Name: "py", Size: 1, Max: 2})
	waitFor(t, 5*time.Second, "1 warm", func() bool { return m.Stats()["py"].Warm == 1 })
	srv.Inject(pooltest.Fault{Method: http.MethodPut, Path: "/v1/var/", Status: 503, Times: 2})
	if _, err := m.Claim(ctx(t, 5*time.Second), "py", Owner{}); err != nil {
		t.Fatalf("claim with 2 transient 503s: %v", err)
	}
}

// A claim write whose answer was lost is retried; the retry conflicts with
// the first attempt's record, which the nonce identifies as ours. A record
// with another nonce is someone else's.
func TestClaimRetryRecognizesOwnRecord(t *testing.T) {
	m, srv := fakeManager(t, nil, Config{Name: "py", Size: 0, Max: 1})
	path := ClaimPath("py", "a1")
	items := api.VariableItems{itemNonce: "n1", itemAlloc: "a1"}
	srv.PutVar(path, items)
	if got, err := m.createClaim(ctx(t, time.Second), path, items, sameNonce(items)); err != nil || got.Items[itemNonce] != "n1" {
		t.Fatalf("own record not recognized: %v", err)
	}
	items[itemNonce] = "n2"
	if _, err := m.createClaim(ctx(t, time.Second), path, items, sameNonce(items)); !errors.Is(err, errLost) {
		t.Fatalf("foreign record: %v, want errLost", err)
	}
}

func TestClaimPersistent5xxIsAClearError(t *testing.T) {
	m, srv := fakeManager(t, nil, Config{Name: "py", Size: 1, Max: 2})
	waitFor(t, 5*time.Second, "1 warm", func() bool { return m.Stats()["py"].Warm == 1 })
	srv.Inject(pooltest.Fault{Method: http.MethodPut, Path: "/v1/var/", Status: 500})
	_, err := m.Claim(ctx(t, 5*time.Second), "py", Owner{})
	if err == nil || !strings.Contains(err.Error(), `claim warm allocation in pool "py"`) || !strings.Contains(err.Error(), "500") {
		t.Fatalf("got %v", err)
	}
	srv.Clear()
	// The candidate was not lost: it can be claimed once the API heals.
	if _, err := m.Claim(ctx(t, 5*time.Second), "py", Owner{}); err != nil {
		t.Fatalf("claim after recovery: %v", err)
	}
}

func TestSlowAPIClaimTimesOut(t *testing.T) {
	m, srv := fakeManager(t, nil, Config{Name: "py", Size: 1, Max: 2})
	waitFor(t, 5*time.Second, "1 warm", func() bool { return m.Stats()["py"].Warm == 1 })
	srv.Inject(pooltest.Fault{Method: http.MethodPut, Path: "/v1/var/", Delay: 5 * time.Second})
	start := time.Now()
	_, err := m.Claim(ctx(t, 300*time.Millisecond), "py", Owner{})
	if err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("claim took %s despite a 300ms deadline", d)
	}
}

// The allocation vanishes while its claim is being written; the allocation
// watch sees it before the write returns. The claim is undone (job purged,
// record deleted) and the next candidate is used.
func TestClaimedAllocationDisappears(t *testing.T) {
	m, srv := fakeManager(t, nil, Config{Name: "py", Size: 2, Max: 4})
	waitFor(t, 5*time.Second, "2 warm", func() bool { return m.Stats()["py"].Warm == 2 })
	var once sync.Once
	var gone string
	srv.BeforeVarWrite(func(path, cas string) {
		once.Do(func() {
			_, gone, _ = parseClaimPath(path)
			srv.RemoveAlloc(gone)
			waitFor(t, 5*time.Second, "inventory to drop the allocation", func() bool {
				m.mu.Lock()
				defer m.mu.Unlock()
				for _, allocs := range m.inv.allocs {
					for _, a := range allocs {
						if a.ID == gone {
							return false
						}
					}
				}
				return true
			})
		})
	})
	c, err := m.Claim(ctx(t, 5*time.Second), "py", Owner{})
	if err != nil {
		t.Fatalf("claim: %v", err)
	}
	if c.AllocID == gone {
		t.Fatal("handed out a vanished allocation")
	}
	waitFor(t, 5*time.Second, "vanished allocation's claim removed", func() bool {
		return len(srv.Vars(ClaimPath("py", gone))) == 0
	})
}

// With the allocation watch failing, the claim reads the allocation back:
// a vanished one is skipped; an unreadable one is a clear error, and the
// claim is given back.
func TestClaimConfirmsWhenWatchFails(t *testing.T) {
	m, srv := fakeManager(t, nil, Config{Name: "py", Size: 3, Max: 5})
	waitFor(t, 5*time.Second, "3 warm", func() bool { return m.Stats()["py"].Warm == 3 })
	// Fail the blocking watch only (it carries index=), not the read-back.
	srv.Inject(pooltest.Fault{Method: http.MethodGet, Path: "/v1/allocations", Query: "index=", Status: 503})
	srv.SetAllocStatus(firstAlloc(srv), "running", "running") // wake the watch into the fault
	waitFor(t, 5*time.Second, "watch failing", func() bool { return m.Health() != nil })
	var once sync.Once
	var gone string
	srv.BeforeVarWrite(func(path, cas string) {
		once.Do(func() {
			_, gone, _ = parseClaimPath(path)
			srv.RemoveAlloc(gone)
		})
	})
	c, err := m.Claim(ctx(t, 5*time.Second), "py", Owner{})
	if err != nil || c.AllocID == gone {
		t.Fatalf("claim with a vanished first candidate: %+v, %v", c, err)
	}

	// The vanished candidate's record goes in the background; counted
	// below, its removal would pass for the record given back.
	waitFor(t, 5*time.Second, "the vanished candidate's record removed", func() bool {
		_, ok := srv.Vars(claimRoot)[ClaimPath("py", gone)]
		return !ok
	})

	// Now the read-back fails too (503).
	srv.Inject(pooltest.Fault{Method: http.MethodGet, Path: "/v1/allocations", Status: 503})
	before := len(srv.Vars(claimRoot))
	_, err = m.Claim(ctx(t, 5*time.Second), "py", Owner{})
	if err == nil || !strings.Contains(err.Error(), "503") || !strings.Contains(err.Error(), `pool "py"`) {
		t.Fatalf("claim with failing reads: %v", err)
	}
	waitFor(t, 5*time.Second, "claim record given back", func() bool { return len(srv.Vars(claimRoot)) == before })
}

// A rotated token takes effect on the Manager's next call: the old token is
// deleted, the new one set, and the same Manager claims and releases with no
// restart and without losing its warm instance.
func TestTokenRotationKeepsTheManager(t *testing.T) {
	srv := pooltest.New()
	t.Cleanup(srv.Close)
	srv.RequireToken("first")
	tok := nomadapi.NewToken("first")
	m := newManager(t, srv, func(m *Manager) { m.token = tok }, Config{Name: "py", Size: 1, Max: 3})
	if err := m.Start(ctx(t, 10*time.Second)); err != nil {
		t.Fatalf("start with the first token: %v", err)
	}
	waitFor(t, 5*time.Second, "1 warm", func() bool { return m.Stats()["py"].Warm == 1 })

	srv.RequireToken("second") // the operator deleted the first token
	if _, err := m.Claim(ctx(t, 2*time.Second), "py", Owner{AllocID: "owner-0"}); err == nil {
		t.Fatal("claim with a deleted token succeeded: the fake does not check tokens")
	}
	tok.Set("second")
	c, err := m.Claim(ctx(t, 5*time.Second), "py", Owner{AllocID: "owner-1"})
	if err != nil {
		t.Fatalf("claim after the rotation: %v", err)
	}
	if err := m.Release(ctx(t, 5*time.Second), c); err != nil {
		t.Fatalf("release after the rotation: %v", err)
	}
	waitFor(t, 5*time.Second, "1 warm again", func() bool { s := m.Stats()["py"]; return s.Warm == 1 && s.Claimed == 0 })
}
