package pool

import (
	"testing"
	"time"
)

// AllocDone follows a claimed allocation from the inventory: it waits while
// the allocation runs, and says why once it is stopped or gone, without a
// query of its own while it waits.
func TestAllocDoneFromInventory(t *testing.T) {
	m, srv := fakeManager(t, nil, Config{Name: "py", Size: 2, Max: 4})
	waitFor(t, 5*time.Second, "2 warm", func() bool { return m.Stats()["py"].Warm == 2 })
	c := claim(t, m, Owner{})

	type result struct {
		why string
		err error
	}
	done := make(chan result, 1)
	go func() {
		why, err := m.AllocDone(ctx(t, 10*time.Second), c.AllocID)
		done <- result{why, err}
	}()
	infos := srv.Calls("GET", "/v1/allocation/"+c.AllocID)
	time.Sleep(300 * time.Millisecond)
	select {
	case r := <-done:
		t.Fatalf("AllocDone returned while the allocation runs: %+v", r)
	default:
	}
	if n := srv.Calls("GET", "/v1/allocation/"+c.AllocID); n != infos {
		t.Errorf("%d reads of the allocation while it ran, want none", n-infos)
	}

	srv.FailAlloc(c.AllocID)
	select {
	case r := <-done:
		if r.err != nil || r.why != "allocation is failed" {
			t.Errorf("AllocDone = %q, %v; want %q", r.why, r.err, "allocation is failed")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("AllocDone did not notice the stopped allocation")
	}
}
