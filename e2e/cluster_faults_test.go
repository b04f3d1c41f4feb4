package e2e

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-pool/internal/nodeattr"
)

// A pool whose template is broken on one node only: that node advertises no
// warm sandbox and no cold slot once its pool fails, so a burst goes to the
// two good nodes, all its jobs succeed, their 4 warm sandboxes are all used,
// and nothing is left blocked.
func TestClusterBrokenTemplateOnOneNode(t *testing.T) {
	const (
		clients = 3
		size    = 2
		bad     = 2 // the client whose template is broken
		jobs    = 6
	)
	broken := filepath.Join(t.TempDir(), "broken.nomad.hcl")
	if err := os.WriteFile(broken, []byte(rawExecWith(t, "/no/such/agent", "")), 0o644); err != nil {
		t.Fatal(err)
	}
	c := startSandboxCluster(t, clients, size, 8, func(i int) string {
		if i == bad {
			return broken
		}
		return rawExecTemplate(t)
	})
	badNode := c.Clients[bad].NodeID
	waitFor(t, 3*time.Minute, "2 warm on the good nodes, nothing free on the broken one", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		warm, err1 := advertised(ctx, c)
		cold, err2 := advertisedGroup(ctx, c, clusterPool+".cold")
		if err1 != nil || err2 != nil || poolAttr(c, badNode, nodeattr.Error) == "" {
			return false
		}
		for _, a := range c.Clients {
			want := size
			if a.NodeID == badNode {
				want = 0
				if len(cold[a.NodeID]) != 0 {
					return false
				}
			}
			if len(warm[a.NodeID]) != want {
				return false
			}
		}
		return true
	})

	samples, errs := burst(c, burstJobs(t, c, "broken-burst", jobs))
	tl := tally(samples, errs, t.Logf)
	t.Logf("burst of %d with node %s broken: %s", jobs, badNode[:8], tl)
	if tl.ok != jobs {
		t.Errorf("%d of %d jobs succeeded", tl.ok, jobs)
	}
	if n := tl.byNode[badNode[:8]]; n != 0 {
		t.Errorf("%d jobs placed on the node whose template is broken", n)
	}
	if want := (clients - 1) * size; tl.hits < want {
		t.Errorf("%d warm hits, want the good nodes' %d", tl.hits, want)
	}
	if blocked := blockedEvals(t, c, "broken-burst"); len(blocked) > 0 {
		t.Errorf("evaluations left blocked: %v", blocked)
	}
}

// A burst while one of three nodes is drained: Nomad places nothing there,
// so the jobs run on the two other nodes, whose 4 warm sandboxes are all
// used, all succeed, and nothing is left blocked.
func TestClusterBurstWhileANodeDrains(t *testing.T) {
	const (
		clients = 3
		size    = 2
		jobs    = 6
	)
	c := sandboxCluster(t, clients, size, 8)
	drained := c.Clients[0].NodeID
	if _, err := c.Server.Client.Nodes().UpdateDrain(drained, &api.DrainSpec{Deadline: time.Second}, false, nil); err != nil {
		t.Fatalf("drain node %s: %v", drained[:8], err)
	}
	waitFor(t, 2*time.Minute, "the node drained and ineligible", func() bool {
		n, _, err := c.Server.Client.Nodes().Info(drained, nil)
		return err == nil && n.SchedulingEligibility == api.NodeSchedulingIneligible && n.DrainStrategy == nil
	})

	samples, errs := burst(c, burstJobs(t, c, "drain-burst", jobs))
	tl := tally(samples, errs, t.Logf)
	t.Logf("burst of %d with node %s drained: %s", jobs, drained[:8], tl)
	if tl.ok != jobs {
		t.Errorf("%d of %d jobs succeeded", tl.ok, jobs)
	}
	if n := tl.byNode[drained[:8]]; n != 0 {
		t.Errorf("%d jobs placed on the drained node", n)
	}
	if want := (clients - 1) * size; tl.hits < want {
		t.Errorf("%d warm hits, want the other nodes' %d", tl.hits, want)
	}
	if tl.twice != 0 {
		t.Errorf("%d sandboxes handed out twice", tl.twice)
	}
	if blocked := blockedEvals(t, c, "drain-burst"); len(blocked) > 0 {
		t.Errorf("evaluations left blocked: %v", blocked)
	}
}
