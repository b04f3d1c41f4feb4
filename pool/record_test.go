package pool

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"
)

// gateClaimWrites makes every claim record write wait until the returned
// func is called.
func gateClaimWrites(t *testing.T, srv interface {
	BeforeVarWrite(func(path, cas string))
}) (open func()) {
	gate := make(chan struct{})
	var once sync.Once
	srv.BeforeVarWrite(func(path, cas string) {
		if strings.HasPrefix(path, claimRoot) && cas == "0" {
			<-gate
		}
	})
	open = func() { once.Do(func() { close(gate) }) }
	t.Cleanup(open)
	return open
}

// With write-behind, a claim is handed out before its record is written:
// the allocation is claimed at once (no second claim gets it), Wait reports
// the record once Nomad took it, and Release waits for the write and then
// deletes the record and purges the job.
func TestWriteBehindClaim(t *testing.T) {
	m, srv := fakeManager(t, func(m *Manager) { m.writeBehind = true }, Config{Name: "py", Size: 2, Max: 4})
	waitFor(t, 5*time.Second, "2 warm", func() bool { return m.Stats()["py"].Warm == 2 })
	open := gateClaimWrites(t, srv)

	c1, err := m.Claim(ctx(t, 5*time.Second), "py", Owner{AllocID: "o1", TaskName: "t"})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(srv.Vars(claimRoot)); n != 0 {
		t.Fatalf("%d claim records before the write was let through, want 0", n)
	}
	if s := m.Stats()["py"]; s.Claimed != 1 {
		t.Fatalf("claimed %d while its record is being written, want 1: %+v", s.Claimed, s)
	}
	c2, err := m.Claim(ctx(t, 5*time.Second), "py", Owner{AllocID: "o2", TaskName: "t"})
	if err != nil {
		t.Fatal(err)
	}
	if c1.AllocID == c2.AllocID {
		t.Fatalf("allocation %s handed out twice", c1.AllocID)
	}
	wctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	err = c1.Wait(wctx)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait before the write: %v, want a deadline error", err)
	}

	released := make(chan error, 1)
	go func() { released <- m.Release(ctx(t, 5*time.Second), c1) }()
	select {
	case err := <-released:
		t.Fatalf("Release returned before the record was written: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	open()
	if err := c2.Wait(ctx(t, 5*time.Second)); err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if err := <-released; err != nil {
		t.Fatalf("Release: %v", err)
	}
	vars := srv.Vars(claimRoot)
	if _, ok := vars[ClaimPath("py", c1.AllocID)]; ok {
		t.Errorf("released claim's record still there")
	}
	rec, ok := vars[ClaimPath("py", c2.AllocID)]
	if !ok || rec[itemOwnerAlloc] != "o2" {
		t.Errorf("record of the second claim: %v (present %v), want owner o2", rec, ok)
	}
	if srv.Job(c1.JobID) != nil {
		t.Errorf("released claim's job %s not purged", c1.JobID)
	}
}

// A record written behind its claim that finds another claimer's record
// there loses: Wait says so, and Release leaves that claimer's sandbox and
// record alone.
func TestWriteBehindLostToAnotherRecord(t *testing.T) {
	m, srv := fakeManager(t, func(m *Manager) { m.writeBehind = true }, Config{Name: "py", Size: 1, Max: 2})
	waitFor(t, 5*time.Second, "1 warm", func() bool { return m.Stats()["py"].Warm == 1 })
	foreign := api.VariableItems{itemNonce: "theirs", itemReason: reasonClaim, itemOwnerAlloc: "other"}
	srv.BeforeVarWrite(func(path, cas string) {
		if strings.HasPrefix(path, claimRoot) && cas == "0" {
			srv.PutVar(path, foreign)
		}
	})
	c, err := m.Claim(ctx(t, 5*time.Second), "py", Owner{AllocID: "o1", TaskName: "t"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Wait(ctx(t, 5*time.Second)); !errors.Is(err, ErrClaimLost) {
		t.Fatalf("Wait: %v, want ErrClaimLost", err)
	}
	srv.BeforeVarWrite(nil)
	if err := m.Release(ctx(t, 5*time.Second), c); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if rec := srv.Vars(claimRoot)[ClaimPath("py", c.AllocID)]; rec[itemNonce] != "theirs" {
		t.Errorf("the other claimer's record was touched: %v", rec)
	}
	if srv.Job(c.JobID) == nil {
		t.Errorf("the other claimer's sandbox job %s was purged", c.JobID)
	}
}

// Adopt writes the record of a recovered claim when it is missing, accepts
// the same owner's record, and refuses another owner's.
func TestAdopt(t *testing.T) {
	m, srv := fakeManager(t, nil, Config{Name: "py", Size: 0, Max: 1})
	owner := Owner{AllocID: "o1", TaskName: "t", TaskID: "o1/t"}
	c := &Claim{Pool: "py", AllocID: "a1", JobID: "j1", TaskName: "w", Owner: owner, ClaimedAt: time.Now().UTC()}
	if err := m.Adopt(ctx(t, 5*time.Second), c); err != nil {
		t.Fatalf("adopt a missing record: %v", err)
	}
	rec := srv.Vars(claimRoot)[ClaimPath("py", "a1")]
	if rec[itemOwnerAlloc] != "o1" || rec[itemOwnerTID] != "o1/t" {
		t.Fatalf("adopted record: %v", rec)
	}
	// A new Manager (a restarted plugin) adopting again: the record is there.
	m.Stop()
	m2 := newManager(t, srv, nil, Config{Name: "py", Size: 0, Max: 1})
	if err := m2.Start(ctx(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := m2.Adopt(ctx(t, 5*time.Second), c); err != nil {
		t.Fatalf("adopt an existing record of the same owner: %v", err)
	}
	other := *c
	other.Owner = Owner{AllocID: "o2", TaskName: "t", TaskID: "o2/t"}
	if err := m2.Adopt(ctx(t, 5*time.Second), &other); !errors.Is(err, ErrClaimLost) {
		t.Fatalf("adopt another owner's claim: %v, want ErrClaimLost", err)
	}
}

// A record written behind its claim that finds a record of the same owner
// task (an earlier attempt that crashed after its write left) takes it as
// its own: the restarted task keeps the sandbox.
func TestWriteBehindAcceptsSameOwnerTask(t *testing.T) {
	m, srv := fakeManager(t, func(m *Manager) { m.writeBehind = true }, Config{Name: "py", Size: 1, Max: 2})
	waitFor(t, 5*time.Second, "1 warm", func() bool { return m.Stats()["py"].Warm == 1 })
	earlier := api.VariableItems{itemNonce: "crashed", itemReason: reasonClaim, itemOwnerAlloc: "o1", itemOwnerTask: "t", itemOwnerTID: "o1/t/1"}
	srv.BeforeVarWrite(func(path, cas string) {
		if strings.HasPrefix(path, claimRoot) && cas == "0" {
			srv.PutVar(path, earlier)
		}
	})
	c, err := m.Claim(ctx(t, 5*time.Second), "py", Owner{AllocID: "o1", TaskName: "t", TaskID: "o1/t/2"})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Wait(ctx(t, 5*time.Second)); err != nil {
		t.Fatalf("Wait: %v, want the same owner task's record accepted", err)
	}
}
