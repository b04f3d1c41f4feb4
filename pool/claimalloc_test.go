package pool

import (
	"testing"
	"time"
)

// A task the scheduler gave one warm sandbox gets that one, not the oldest;
// one whose sandbox is gone (claimed meanwhile) or unknown gets another, as
// Claim would give it; every call counts toward the pool's demand.
func TestClaimAllocTakesTheGivenSandbox(t *testing.T) {
	m, _ := fakeManager(t, nil, Config{Name: "py", Size: 3, Max: 6, MaxWarm: 6})
	waitFor(t, 5*time.Second, "3 warm", func() bool { return len(m.Warm()) == 3 })
	warm := m.Warm()
	want := warm[len(warm)-1].AllocID // the newest: Claim would take warm[0]

	c, err := m.ClaimAlloc(ctx(t, 5*time.Second), "py", want, Owner{AllocID: "owner-1", TaskName: "agent"})
	if err != nil {
		t.Fatalf("claim alloc: %v", err)
	}
	if c.AllocID != want || !c.Hit {
		t.Fatalf("claimed %s (hit %v), want the given %s as a hit", c.AllocID, c.Hit, want)
	}

	again, err := m.ClaimAlloc(ctx(t, 5*time.Second), "py", want, Owner{AllocID: "owner-2", TaskName: "agent"})
	if err != nil {
		t.Fatalf("claim alloc of a claimed sandbox: %v", err)
	}
	if again.AllocID == want {
		t.Fatalf("sandbox %s handed out twice", want)
	}
	other, err := m.ClaimAlloc(ctx(t, 5*time.Second), "py", "no-such-alloc", Owner{AllocID: "owner-3", TaskName: "agent"})
	if err != nil || other.AllocID == want || other.AllocID == again.AllocID {
		t.Fatalf("claim alloc of an unknown sandbox: %+v, %v", other, err)
	}

	m.mu.Lock()
	rate := m.pools["py"].demand.rateNow(m.now())
	m.mu.Unlock()
	// Three claims within a moment: about 3/τ claims per second.
	if lo := 2.5 / rateTau.Seconds(); rate < lo {
		t.Fatalf("claim rate %.3f/s after three ClaimAlloc calls, want at least %.3f/s: they do not feed the demand", rate, lo)
	}
}
