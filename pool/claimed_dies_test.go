package pool

import (
	"testing"
	"time"
)

// A claimed sandbox whose task ends (the driver ends every process of a
// sandbox when its task exits, the warm task's own included) is still the
// claimer's until released: it is counted claimed, not as a warm instance
// that died before being claimed (no failure of the template, no backoff, no
// purge behind the claimer's back), and Release then purges it.
func TestClaimedAllocationWhoseTaskEnds(t *testing.T) {
	for _, wb := range []bool{false, true} {
		name := "record written"
		if wb {
			name = "record written behind"
		}
		t.Run(name, func(t *testing.T) {
			m, srv := fakeManager(t, func(m *Manager) { m.writeBehind = wb }, Config{Name: "py", Size: 1, Max: 4})
			waitFor(t, 5*time.Second, "1 warm", func() bool { return m.Stats()["py"].Warm == 1 })
			c, err := m.Claim(ctx(t, 5*time.Second), "py", Owner{AllocID: "owner-1", TaskName: "agent"})
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Wait(ctx(t, 5*time.Second)); err != nil {
				t.Fatal(err)
			}
			srv.FailAlloc(c.AllocID)
			waitFor(t, 5*time.Second, "the inventory to see the allocation gone", func() bool {
				m.mu.Lock()
				defer m.mu.Unlock()
				return m.liveAllocLocked(c.AllocID) == nil
			})
			waitFor(t, 5*time.Second, "the pool warm again", func() bool { return m.Stats()["py"].Warm == 1 })
			m.mu.Lock()
			failures, failed := m.pools["py"].failures, m.pools["py"].view.counts.Failed
			m.mu.Unlock()
			if st := m.Stats()["py"]; failures != 0 || failed != 0 || st.Claimed != 1 {
				t.Errorf("after the claimed allocation's task ended: %d failures, %d failed, %d claimed; want 0, 0, 1", failures, failed, st.Claimed)
			}
			if srv.Job(c.JobID) == nil {
				t.Error("the claimed sandbox's job was purged before its claimer released it")
			}
			if err := m.Release(ctx(t, 5*time.Second), c); err != nil {
				t.Fatal(err)
			}
			waitFor(t, 5*time.Second, "the claim gone", func() bool {
				return len(srv.Vars(ClaimPath("py", c.AllocID))) == 0 && m.Stats()["py"].Claimed == 0
			})
		})
	}
}
