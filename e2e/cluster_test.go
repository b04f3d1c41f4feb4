package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/agentkernel/agentkernel-pool/device"
)

// Bursts of 6 and of 9 sandbox jobs registered at once on three nodes that
// hold 2 warm sandboxes each (W = 6): every warm sandbox of the cluster is
// used (hits = min(B, W), at least, whichever node holds it), within W each
// job in the very sandbox the scheduler reserved, the jobs beyond W start
// cold on some node at once (none waits blocked for a fingerprint),
// no sandbox is handed out twice, and once the jobs are purged every node is
// back to 2 warm with no claim left.
func TestClusterBurst(t *testing.T) {
	const (
		clients = 3
		size    = 2
		warm    = clients * size
	)
	c := sandboxCluster(t, clients, size, 8)

	// What an operator sees: the device group with one instance per warm sandbox.
	out, _, code := nomadCLI(t, c.Server, "", "node", "status", "-verbose", c.Clients[0].NodeID)
	if want := device.Vendor + "/" + device.Type + "/" + clusterPool; code != 0 || !strings.Contains(out, want) {
		t.Fatalf("node status -verbose (exit %d) does not show the device group %s:\n%s", code, want, out)
	}

	for _, b := range []int{6, 9} {
		t.Run(fmt.Sprintf("burst-%d", b), func(t *testing.T) {
			waitAdvertised(t, c, size, 2*time.Minute)
			prefix := fmt.Sprintf("burst%d", b)
			jobs := burstJobs(t, c, prefix, b)
			samples, errs := burst(c, jobs)
			tl := tally(samples, errs, t.Logf)
			t.Logf("burst of %d on %d warm: %s", b, warm, tl)
			if tl.ok != b {
				t.Errorf("%d of %d jobs succeeded", tl.ok, b)
			}
			if want := min(b, warm); tl.hits < want {
				t.Errorf("%d warm hits, want at least %d", tl.hits, want)
			}
			// Within W every job is given a warm sandbox and runs in it;
			// beyond, a job given a cold slot may take a warm sandbox of its
			// node reserved for another, which then starts cold: who waits
			// changes, not how many.
			if b <= warm && tl.exact != b {
				t.Errorf("%d of %d jobs ran in the sandbox the scheduler reserved", tl.exact, b)
			}
			if tl.twice != 0 {
				t.Errorf("%d sandboxes handed out twice", tl.twice)
			}
			if blocked := blockedEvals(t, c, prefix); len(blocked) > 0 {
				t.Errorf("evaluations left blocked: %v", blocked)
			}
			purgeAll(t, c, jobs)
			waitAdvertised(t, c, size, 2*time.Minute)
			claims, _, err := c.Server.Client.Variables().PrefixList("agentkernel-pool/"+clusterPool+"/claims/", nil)
			if err != nil || len(claims) != 0 {
				t.Errorf("claim records left after the burst: %d (%v)", len(claims), err)
			}
		})
	}
}
