package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-pool/internal/nomadtest"
)

// A client killed (SIGKILL, the agent process alone) while a burst of 6 is
// being started on three nodes holding 2 warm each, once a task there has
// claimed its sandbox. What an operator expects (README, Cluster), whether
// the client comes back at once (a service manager restarting it) or only
// after the servers marked its node down:
//
//   - every job completes once, failing none: the killed node's tasks that
//     were started go on and report once the client is back, those not yet
//     started are started then; or, with the node down, its allocations
//     are lost and Nomad runs those jobs again on the live nodes (a lost
//     allocation is replaced whatever the reschedule policy, which is for
//     failures);
//   - no sandbox serves two tasks;
//   - once the client is back on its data dir, its pool returns to 2 warm
//     advertised as devices, with no claim, no surplus sandbox, no
//     evaluation blocked and none of the killed agent's plugins running.
func TestClusterClientKilledMidBurst(t *testing.T) {
	const (
		clients = 3
		size    = 2
	)
	c := sandboxCluster(t, clients, size, 8)
	t.Run("restarted-at-once", func(t *testing.T) { clientKilledMidBurst(t, c, c.Clients[1], "kill-now", false) })
	t.Run("restarted-after-down", func(t *testing.T) { clientKilledMidBurst(t, c, c.Clients[2], "kill-down", true) })
}

func clientKilledMidBurst(t *testing.T, c *nomadtest.Cluster, victim *nomadtest.Agent, prefix string, waitDown bool) {
	const (
		size = 2
		jobs = 6
	)
	waitAdvertised(t, c, size, 2*time.Minute)
	js := burstJobs(t, c, prefix, jobs)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	var reg sync.WaitGroup
	regErrs := make([]error, len(js))
	for i, job := range js {
		reg.Go(func() {
			_, _, regErrs[i] = c.Server.Client.Jobs().Register(job, (&api.WriteOptions{}).WithContext(ctx))
		})
	}
	// Mid-burst: a task on the victim has claimed its sandbox (the driver
	// said so in an event), while others are still being placed or started.
	waitFor(t, 2*time.Minute, "a burst task on the victim to claim its sandbox", func() bool {
		allocs, _, err := c.Server.Client.Nodes().Allocations(victim.NodeID, nil)
		if err != nil {
			return false
		}
		for _, a := range allocs {
			if ts := a.TaskStates["agent"]; strings.HasPrefix(a.JobID, prefix) && ts != nil && claimedIn(ts) != "" {
				return true
			}
		}
		return false
	})
	victim.Kill()
	killed := time.Now()
	reg.Wait()
	for _, err := range regErrs {
		if err != nil {
			t.Fatalf("register: %v", err)
		}
	}
	if waitDown {
		waitFor(t, 2*time.Minute, "the killed node to be down", func() bool {
			n, _, err := c.Server.Client.Nodes().Info(victim.NodeID, nil)
			return err == nil && n.Status == api.NodeStatusDown
		})
		t.Logf("node %s down %s after the kill", victim.NodeID[:8], time.Since(killed).Round(time.Second))
	} else {
		victim.Restart()
		t.Logf("node %s back %s after the kill", victim.NodeID[:8], time.Since(killed).Round(time.Second))
	}
	outcomes := waitJobsSettled(ctx, t, c, js)

	okJobs, lost, onVictim := 0, 0, 0
	sandboxes := map[string]int{}
	for _, o := range outcomes {
		if o.completed == 1 && o.failed == 0 {
			okJobs++
		} else {
			t.Errorf("job %s: %d allocations completed, %d failed, want 1 and 0:\n%s", o.jobID, o.completed, o.failed, o.detail)
		}
		lost += o.lost
		if n := o.onVictim(victim.NodeID); n > 0 {
			onVictim += n
			t.Logf("job %s, placed on the killed node:\n%s", o.jobID, o.detail)
		}
		for _, s := range o.sandboxes {
			sandboxes[s]++
		}
	}
	t.Logf("burst of %d, node %s killed mid-burst: %d jobs completed, %d allocations lost (%d placed on the killed node), %d sandboxes used, claimed twice %d",
		jobs, victim.NodeID[:8], okJobs, lost, onVictim, len(sandboxes), dups(sandboxes))
	if onVictim == 0 {
		t.Errorf("no allocation of the burst was placed on the killed node: the test killed it too late")
	}
	if dups(sandboxes) != 0 {
		t.Errorf("sandboxes handed to two tasks: %v", sandboxes)
	}

	// The client returns on its data dir: what it left is cleaned up.
	if waitDown {
		// Its warm sandboxes were lost too, and their jobs are pinned to it.
		t.Logf("while the node is down, evaluations blocked: %v", blockedEvals(t, c, ""))
		victim.Restart()
	}
	waitAdvertised(t, c, size, 3*time.Minute)
	waitFor(t, 2*time.Minute, "no claim record left", func() bool {
		claims, _, err := c.Server.Client.Variables().PrefixList("agentkernel-pool/"+clusterPool+"/claims/", nil)
		return err == nil && len(claims) == 0
	})
	waitFor(t, 2*time.Minute, fmt.Sprintf("%d warm sandbox allocations per node and nothing else live", size), func() bool {
		return liveAllocsSettled(t, c, size)
	})
	if blocked := blockedEvals(t, c, ""); len(blocked) > 0 {
		t.Errorf("evaluations left blocked: %v", blocked)
	}
	if left := victim.KilledProcesses(nomadtest.PluginName); len(left) > 0 {
		t.Errorf("the killed agent's plugins still run after its restart: pids %v", left)
	}
	purgeAll(t, c, js)
}

// jobOutcome is what became of one job of a burst: its allocations by
// client status, the nodes they were on, and the sandboxes they ran in
// (from the claim events and the first line each wrote).
type jobOutcome struct {
	jobID                   string
	completed, failed, lost int
	nodes                   []string
	sandboxes               []string // one per allocation that claimed one
	detail                  string
}

func (o jobOutcome) onVictim(node string) int {
	n := 0
	for _, id := range o.nodes {
		if id == node {
			n++
		}
	}
	return n
}

// waitJobsSettled waits until every job is dead with no live allocation
// (a lost one counts as ended) and returns what became of each.
func waitJobsSettled(ctx context.Context, t *testing.T, c *nomadtest.Cluster, jobs []*api.Job) []jobOutcome {
	t.Helper()
	out := make([]jobOutcome, len(jobs))
	waitFor(t, 4*time.Minute, "every job of the burst to end", func() bool {
		for i, job := range jobs {
			o, done := jobSettled(ctx, c, *job.ID)
			if !done {
				return false
			}
			out[i] = o
		}
		return true
	})
	return out
}

// jobSettled reads one job's allocations; done is false while the job or
// one of its allocations is still live.
func jobSettled(ctx context.Context, c *nomadtest.Cluster, jobID string) (jobOutcome, bool) {
	o := jobOutcome{jobID: jobID}
	q := (&api.QueryOptions{}).WithContext(ctx)
	job, _, err := c.Server.Client.Jobs().Info(jobID, q)
	if err != nil || *job.Status != "dead" {
		return o, false
	}
	allocs, _, err := c.Server.Client.Jobs().Allocations(jobID, true, q)
	if err != nil {
		return o, false
	}
	var detail strings.Builder
	for _, a := range allocs {
		switch a.ClientStatus {
		case api.AllocClientStatusComplete:
			o.completed++
		case api.AllocClientStatusFailed:
			o.failed++
		case api.AllocClientStatusLost:
			o.lost++
		default:
			return o, false
		}
		o.nodes = append(o.nodes, a.NodeID)
		fmt.Fprintf(&detail, "  alloc %s on %s: %s\n", a.ID[:8], a.NodeID[:8], a.ClientStatus)
		sandbox := ""
		if ts := a.TaskStates["agent"]; ts != nil {
			detail.WriteString(indent(events(ts), "    "))
			sandbox = claimedIn(ts)
		}
		// The first line names the sandbox too, also for an allocation
		// whose node died before it reported its events.
		if n := c.Client(a.NodeID); n != nil {
			if b, err := os.ReadFile(logPath(n, a.ID, "agent")); err == nil {
				if s, _ := reservedFromOutput(string(b)); s != "" {
					if sandbox != "" && !strings.HasPrefix(s, sandbox) {
						fmt.Fprintf(&detail, "  events name sandbox %s, its output %s\n", sandbox, s)
					}
					sandbox = s[:min(len(s), 8)]
				}
			}
		}
		if sandbox != "" {
			o.sandboxes = append(o.sandboxes, sandbox)
		}
	}
	o.detail = detail.String()
	return o, true
}

// liveAllocsSettled reports whether every live allocation of the cluster
// is a running warm sandbox of the pool, want per node.
func liveAllocsSettled(t *testing.T, c *nomadtest.Cluster, want int) bool {
	t.Helper()
	allocs, _, err := c.Server.Client.Allocations().List(&api.QueryOptions{Filter: `ClientStatus == "pending" or ClientStatus == "running"`})
	if err != nil {
		t.Logf("list allocations: %v", err)
		return false
	}
	perNode := map[string]int{}
	for _, a := range allocs {
		if a.DesiredStatus != api.AllocDesiredStatusRun || a.ClientStatus != api.AllocClientStatusRunning ||
			!strings.HasPrefix(a.JobID, "agentkernel-pool-"+clusterPool+"-") {
			return false
		}
		perNode[a.NodeID]++
	}
	for _, a := range c.Clients {
		if perNode[a.NodeID] != want {
			return false
		}
	}
	return true
}

// claimedIn is the short ID of the sandbox the task's events say it
// claimed, warm or cold; "" when they say none.
func claimedIn(ts *api.TaskState) string {
	for _, e := range ts.Events {
		msg := cmp(e.DriverMessage, e.DisplayMessage)
		if m := claimRe.FindStringSubmatch(msg); m != nil {
			return m[1]
		} else if m := missRe.FindStringSubmatch(msg); m != nil {
			return m[2]
		}
	}
	return ""
}
