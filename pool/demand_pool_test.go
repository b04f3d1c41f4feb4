package pool

import (
	"sync"
	"testing"
	"time"

	"github.com/agentkernel/agentkernel-pool/pool/pooltest"
)

// fakeClock is the demand targets' clock in Manager tests: claim rates and
// scale_down_after follow it; warm-ups are still measured in real time.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// A burst of claims grows a demand-driven pool above size, never beyond max,
// and once demand has been lower for scale_down_after it shrinks back to
// size, retiring the oldest unclaimed instances (each discarded, so what
// Prepare opened for it is closed at once).
func TestDemandGrowsPoolWithinMaxAndShrinksOldestFirst(t *testing.T) {
	clock := &fakeClock{now: time.Now()}
	srv := pooltest.New()
	t.Cleanup(srv.Close)
	srv.SetStartDelay(400 * time.Millisecond) // the warm-up the pool learns
	cfg := Config{Name: "py", Size: 1, MaxWarm: 4, Max: 5, ScaleDownAfter: time.Minute}
	var mu sync.Mutex
	discarded := map[string]bool{}
	m := newManager(t, srv, func(m *Manager) {
		m.now = clock.Now
		m.discard = func(id string) { mu.Lock(); discarded[id] = true; mu.Unlock() }
	}, cfg)
	if err := m.Start(ctx(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}

	// The sandboxes Nomad runs for the pool must never exceed max, whatever
	// the target. (Stats may count one dispatch twice for the instant
	// between the job list showing it and its answer arriving: planning then
	// dispatches less, never more, so the server's count is the judge.)
	stop := make(chan struct{})
	var watched sync.WaitGroup
	watched.Add(1)
	go func() {
		defer watched.Done()
		for {
			if live := srv.LiveAllocs(); len(live) > cfg.Max {
				s := m.Stats()["py"]
				t.Errorf("%d live sandboxes exceed max %d (warm %d, starting %d, claimed %d)", len(live), cfg.Max, s.Warm, s.Starting, s.Claimed)
				return
			}
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	defer func() { close(stop); watched.Wait() }()

	waitFor(t, 5*time.Second, "1 warm", func() bool { return m.Stats()["py"].Warm == 1 })
	if s := m.Stats()["py"]; s.Target != 1 {
		t.Fatalf("idle target %d, want size 1", s.Target)
	}

	// A burst: 15 tasks within a second of the pool's clock, 3 at a time
	// holding their sandboxes.
	var held []*Claim
	for i := range 15 {
		c := claim(t, m, Owner{AllocID: "burst-" + string(rune('a'+i))})
		held = append(held, c)
		if len(held) == 3 {
			for _, c := range held {
				if err := m.Release(ctx(t, 5*time.Second), c); err != nil {
					t.Fatal(err)
				}
			}
			held = held[:0]
		}
		clock.Add(50 * time.Millisecond)
	}
	// Settled: nothing starting, nothing claimed (a surplus instance being
	// retired is claimed by the retire until it is purged).
	waitFor(t, 10*time.Second, "target and warm above size", func() bool {
		s := m.Stats()["py"]
		return s.Target > 1 && s.Warm == s.Target && s.Starting == 0 && s.Claimed == 0
	})
	grown := m.Stats()["py"].Target
	if grown > cfg.MaxWarm {
		t.Fatalf("target %d beyond max_warm %d", grown, cfg.MaxWarm)
	}
	before := m.Warm() // oldest first

	// Lower demand for less than scale_down_after: nothing is retired.
	clock.Add(30 * time.Second)
	m.replenish(m.pools["py"])
	m.mu.Lock()
	retiring := len(m.inv.busy)
	m.mu.Unlock()
	if s := m.Stats()["py"]; s.Target != grown || retiring != 0 {
		t.Fatalf("after 30 s of lower demand: target %d, %d being retired; want target %d and none until scale_down_after", s.Target, retiring, grown)
	}

	// Past scale_down_after: back to size, the newest instance kept.
	clock.Add(2 * time.Minute)
	m.kickReplenish()
	waitFor(t, 10*time.Second, "back to size", func() bool {
		s := m.Stats()["py"]
		return s.Target == 1 && s.Warm == 1 && s.Starting == 0
	})
	after := m.Warm()
	if len(after) != 1 || after[0].AllocID != before[len(before)-1].AllocID {
		t.Fatalf("kept %+v; want the newest of %+v (the oldest retired first)", after, before)
	}
	mu.Lock()
	defer mu.Unlock()
	for i, w := range before {
		if kept := i == len(before)-1; discarded[w.AllocID] == kept {
			t.Errorf("instance %s (kept %t) discarded %t", w.AllocID, kept, discarded[w.AllocID])
		}
	}
	if len(discarded) != len(before)-1 {
		t.Errorf("discarded %d allocations, want the %d retired", len(discarded), len(before)-1)
	}
}
