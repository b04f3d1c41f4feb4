package pool

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agentkernel/agentkernel-pool/pool/pooltest"
)

// An allocation is warm, and can be claimed, only once Prepare succeeded for
// it; until then it counts as starting, and a claim waits.
func TestPreparedBeforeWarm(t *testing.T) {
	release := make(chan struct{})
	var mu sync.Mutex
	prepared := map[string]bool{}
	m, _ := fakeManager(t, func(m *Manager) {
		m.prepare = func(ctx context.Context, w WarmAlloc) error {
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
			mu.Lock()
			prepared[w.AllocID] = true
			mu.Unlock()
			return nil
		}
	}, Config{Name: "py", Size: 2, Max: 4})
	waitFor(t, 5*time.Second, "2 starting", func() bool { s := m.Stats()["py"]; return s.Starting == 2 })
	time.Sleep(100 * time.Millisecond)
	if s := m.Stats()["py"]; s.Warm != 0 || len(m.Warm()) != 0 {
		t.Fatalf("unprepared allocations counted warm: %+v", s)
	}
	cctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	_, err := m.Claim(cctx, "py", Owner{AllocID: "o1"})
	cancel()
	if err == nil {
		t.Fatal("claimed an unprepared allocation")
	}
	close(release)
	waitFor(t, 5*time.Second, "2 warm", func() bool { return m.Stats()["py"].Warm == 2 })
	c, err := m.Claim(ctx(t, 5*time.Second), "py", Owner{AllocID: "o2"})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !prepared[c.AllocID] {
		t.Fatalf("claimed %s, which was never prepared", c.AllocID)
	}
}

// A Prepare that fails replaces the allocation and counts as a failure of the
// pool; Unprepare makes a warm allocation go through Prepare again.
func TestPrepareFailureReplacesAndUnprepareRepeats(t *testing.T) {
	var mu sync.Mutex
	calls := map[string]int{}
	failFirst := true
	m, srv := fakeManager(t, func(m *Manager) {
		m.prepare = func(_ context.Context, w WarmAlloc) error {
			mu.Lock()
			defer mu.Unlock()
			calls[w.AllocID]++
			if failFirst {
				failFirst = false
				return fmt.Errorf("%w: launch path refused", ErrUnpreparable)
			}
			return nil
		}
	}, Config{Name: "py", Size: 1, Max: 3})
	waitFor(t, 10*time.Second, "1 warm", func() bool { return m.Stats()["py"].Warm == 1 })
	mu.Lock()
	n := len(calls)
	mu.Unlock()
	if n != 2 {
		t.Fatalf("prepared %d allocations, want 2 (the failed one replaced)", n)
	}
	if s := m.Stats()["py"]; s.PrepareFailures != 1 {
		t.Errorf("stats %+v, want the prepare failure counted", s)
	}
	waitFor(t, 5*time.Second, "the failed allocation's job purged", func() bool { return len(srv.Children(ParentJobID("py", pooltest.NodeID))) == 1 })
	w := m.Warm()[0]
	m.Unprepare(w.AllocID)
	waitFor(t, 5*time.Second, "prepared again", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return calls[w.AllocID] == 2 && m.Stats()["py"].Warm == 1
	})
}

// A Prepare that fails for a reason not the allocation's own (the API down)
// is tried again, backing off, and replaces nothing.
func TestPrepareRetriesTransientFailures(t *testing.T) {
	var mu sync.Mutex
	calls := 0
	m, srv := fakeManager(t, func(m *Manager) {
		m.prepare = func(context.Context, WarmAlloc) error {
			mu.Lock()
			defer mu.Unlock()
			calls++
			if calls <= 2 {
				return errors.New("connection refused")
			}
			return nil
		}
	}, Config{Name: "py", Size: 1, Max: 3})
	waitFor(t, 10*time.Second, "1 warm", func() bool { return m.Stats()["py"].Warm == 1 })
	if n := len(srv.Children(ParentJobID("py", pooltest.NodeID))); n != 1 {
		t.Errorf("%d children, want the one allocation kept through its failures", n)
	}
	if s := m.Stats()["py"]; s.PrepareFailures != 0 {
		t.Errorf("stats %+v: transient failures counted as the template's", s)
	}
	mu.Lock()
	defer mu.Unlock()
	if calls != 3 {
		t.Errorf("%d Prepare calls, want 3", calls)
	}
}

// A Prepare refused for the token's lack of a right (Nomad's "Permission
// denied" on the exec) fails the pool with the right a template on its
// driver needs (raw_exec: alloc-node-exec); a claim fails at once with it,
// and the pool works once the token may exec.
func TestPrepareDeniedNamesTheRightTheDriverNeeds(t *testing.T) {
	var mu sync.Mutex
	denied := true
	m, _ := fakeManager(t, func(m *Manager) {
		m.prepare = func(context.Context, WarmAlloc) error {
			mu.Lock()
			defer mu.Unlock()
			if denied {
				return errors.New("exec session: websocket: close 1008: Permission denied")
			}
			return nil
		}
	}, Config{Name: "py", Size: 1, Max: 3})
	waitFor(t, 5*time.Second, "the pool failing", func() bool { return m.Stats()["py"].Error != "" })
	e := m.Stats()["py"].Error
	for _, want := range []string{`pool "py" is failing`, "raw_exec", "alloc-node-exec", `namespace "default"`} {
		if !strings.Contains(e, want) {
			t.Errorf("error %q does not say %q", e, want)
		}
	}
	if _, err := m.Claim(ctx(t, time.Minute), "py", Owner{}); !errors.Is(err, ErrFailing) || !strings.Contains(err.Error(), "alloc-node-exec") {
		t.Fatalf("claim while the token may not exec: %v", err)
	}
	mu.Lock()
	denied = false
	mu.Unlock()
	waitFor(t, 40*time.Second, "warm once the token may exec", func() bool {
		s := m.Stats()["py"]
		return s.Warm == 1 && s.Error == ""
	})
}

// An allocation Prepare finds in use (a claim handed out before a crash,
// whose record was never written) is never handed out. Adopted by its
// claimer it is claimed; not adopted within the grace it is retired, and
// neither counts against the template.
func TestInUseWaitsForAdoptOrRetires(t *testing.T) {
	var mu sync.Mutex
	inUse := map[string]bool{} // the first two allocations prepared
	m, srv := fakeManager(t, func(m *Manager) {
		m.inUseGrace = 500 * time.Millisecond
		m.prepare = func(_ context.Context, w WarmAlloc) error {
			mu.Lock()
			defer mu.Unlock()
			if _, seen := inUse[w.AllocID]; !seen {
				inUse[w.AllocID] = len(inUse) < 2
			}
			if inUse[w.AllocID] {
				return fmt.Errorf("%w: run dir there", ErrInUse)
			}
			return nil
		}
	}, Config{Name: "py", Size: 2, Max: 6})
	waitFor(t, 5*time.Second, "2 in use", func() bool { mu.Lock(); defer mu.Unlock(); return len(inUse) >= 2 })
	var used []string
	mu.Lock()
	for id, u := range inUse {
		if u {
			used = append(used, id)
		}
	}
	mu.Unlock()
	live := srv.LiveAllocs()
	adopted := &Claim{Pool: "py", AllocID: used[0], JobID: live[used[0]], Owner: Owner{AllocID: "o1", TaskName: "t", TaskID: "o1/t"}}
	if err := m.Adopt(ctx(t, 5*time.Second), adopted); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		c, err := m.Claim(ctx(t, 5*time.Second), "py", Owner{AllocID: "x", TaskName: "t"})
		if err != nil {
			t.Fatal(err)
		}
		if c.AllocID == used[0] || c.AllocID == used[1] {
			t.Fatalf("handed out allocation %s, which is in use", c.AllocID)
		}
	}
	waitFor(t, 10*time.Second, "the unadopted allocation retired", func() bool {
		_, ok := srv.LiveAllocs()[used[1]]
		return !ok
	})
	if _, ok := srv.LiveAllocs()[used[0]]; !ok {
		t.Errorf("the adopted allocation %s was removed", used[0])
	}
	s := m.Stats()["py"]
	if s.PrepareFailures != 0 || s.Error != "" {
		t.Errorf("allocations in use counted against the template: %+v", s)
	}
}

// A warm allocation that goes back to starting to be prepared again (a
// restarted plugin, a lost launch path) is not retired for having been
// submitted longer ago than the start timeout.
func TestUnpreparedOldInstanceNotTimedOut(t *testing.T) {
	var mu sync.Mutex
	block := false
	m, srv := fakeManager(t, func(m *Manager) {
		m.startTimeout = 300 * time.Millisecond
		m.prepare = func(ctx context.Context, _ WarmAlloc) error {
			mu.Lock()
			b := block
			mu.Unlock()
			if b {
				return errors.New("nomad api not answering")
			}
			return nil
		}
	}, Config{Name: "py", Size: 1, Max: 2})
	waitFor(t, 5*time.Second, "1 warm", func() bool { return m.Stats()["py"].Warm == 1 })
	w := m.Warm()[0]
	time.Sleep(2 * m.startTimeout) // older than the start timeout
	mu.Lock()
	block = true
	mu.Unlock()
	m.Unprepare(w.AllocID)
	time.Sleep(4 * m.startTimeout)
	if _, ok := srv.LiveAllocs()[w.AllocID]; !ok {
		t.Fatalf("allocation %s retired while it was being prepared again", w.AllocID)
	}
	if s := m.Stats()["py"]; s.Error != "" {
		t.Errorf("counted as a failure: %+v", s)
	}
}

// warmups counts the warm-ups an Observer is told of.
type warmups struct {
	mu sync.Mutex
	n  int
}

func (w *warmups) WarmedUp(string, time.Duration) { w.mu.Lock(); w.n++; w.mu.Unlock() }
func (w *warmups) Ready(string, time.Duration)    {}
func (w *warmups) Dispatched(string, error)       {}
func (w *warmups) Purged(string, error)           {}
func (w *warmups) count() int                     { w.mu.Lock(); defer w.mu.Unlock(); return w.n }

// An instance that turns warm again (prepared anew after its launch session
// was lost) has not warmed up again: a second sample, its whole age since the
// dispatch, would pass for a long warm-up and push a demand pool's target up.
func TestWarmupLearnedOncePerInstance(t *testing.T) {
	seen := &warmups{}
	var prepared atomic.Int32
	m, _ := fakeManager(t, func(m *Manager) {
		m.prepare = func(context.Context, WarmAlloc) error { prepared.Add(1); return nil }
		m.observer = seen
	}, Config{Name: "py", Size: 1, Max: 3})
	waitFor(t, 10*time.Second, "1 warm", func() bool { return m.Stats()["py"].Warm == 1 })
	if n := seen.count(); n != 1 {
		t.Fatalf("%d warm-ups learned, want 1", n)
	}
	w := m.Warm()[0]
	before := prepared.Load()
	m.Unprepare(w.AllocID)
	// Not "Warm == 0, then 1": the instance is prepared anew within
	// microseconds, too soon for a poll to see it starting.
	waitFor(t, 5*time.Second, "prepared anew and warm again", func() bool { return prepared.Load() > before && m.Stats()["py"].Warm == 1 })
	if n := seen.count(); n != 1 {
		t.Errorf("%d warm-ups learned after the instance was prepared anew, want 1", n)
	}
}
