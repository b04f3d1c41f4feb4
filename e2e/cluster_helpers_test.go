package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-pool/device"
	"github.com/agentkernel/agentkernel-pool/internal/nodeattr"
	"github.com/agentkernel/agentkernel-pool/internal/nomadtest"
)

// The cluster tests and BenchmarkClusterBurst: one server and three clients
// on loopback, each client with the raw_exec pool "burst" as a device group,
// the device plugin installed as README's Cluster section says.
const clusterPool = "burst"

// sandboxCluster starts the cluster and waits until every node advertises
// size warm sandboxes.
func sandboxCluster(tb testing.TB, clients, size, max int) *nomadtest.Cluster {
	tb.Helper()
	c := startSandboxCluster(tb, clients, size, max, func(int) string { return rawExecTemplate(tb) })
	waitAdvertised(tb, c, size, 3*time.Minute)
	return c
}

// startSandboxCluster starts the cluster, client i's pool on template(i).
func startSandboxCluster(tb testing.TB, clients, size, max int, template func(i int) string) *nomadtest.Cluster {
	tb.Helper()
	if _, err := nomadtest.Binary(); err != nil {
		tb.Skipf("skipping e2e: %v", err)
	}
	block := func(jobspec string) string {
		return "config {\n  pool \"" + clusterPool + "\" {\n    jobspec = \"" + jobspec + "\"\n    size = " + itoa(size) +
			"\n    max = " + itoa(max) + "\n    claim_timeout = \"60s\"\n    device = true\n  }\n}"
	}
	return nomadtest.StartCluster(tb, nomadtest.ClusterOptions{Clients: clients, Client: nomadtest.Options{
		PluginDir:   nomadtest.BuildPlugin(tb),
		ExtraConfig: "plugin \"" + nomadtest.DevicePluginName + "\" {\n  args = [\"" + device.Arg + "\"]\n  config {}\n}\n",
	}, PerClient: func(i int, o *nomadtest.Options) { o.PluginConfig = block(template(i)) }})
}

// advertised is the healthy warm instances of the pool each node has
// registered with the servers (what the scheduler sees), by node ID.
func advertised(ctx context.Context, c *nomadtest.Cluster) (map[string][]string, error) {
	return advertisedGroup(ctx, c, clusterPool)
}

// advertisedGroup is the healthy instances of device group
// agentkernel/sandbox/<name> of each node, by node ID.
func advertisedGroup(ctx context.Context, c *nomadtest.Cluster, name string) (map[string][]string, error) {
	out := map[string][]string{}
	for _, a := range c.Clients {
		n, _, err := c.Server.Client.Nodes().Info(a.NodeID, (&api.QueryOptions{}).WithContext(ctx))
		if err != nil {
			return nil, err
		}
		out[a.NodeID] = []string{}
		if n.NodeResources == nil {
			continue
		}
		for _, d := range n.NodeResources.Devices {
			if d.Vendor != device.Vendor || d.Type != device.Type || d.Name != name {
				continue
			}
			for _, in := range d.Instances {
				if in.Healthy {
					out[a.NodeID] = append(out[a.NodeID], in.ID)
				}
			}
		}
	}
	return out, nil
}

// waitAdvertised waits until every node advertises want warm sandboxes,
// the very ones its driver has warm (the servers' view trails the node by
// its 5-10 s node updates: the sandboxes of the burst before may still be
// offered), and its pool has nothing claimed.
func waitAdvertised(tb testing.TB, c *nomadtest.Cluster, want int, within time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(within)
	var why string
	for time.Now().Before(deadline) {
		why = ""
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		adv, err := advertised(ctx, c)
		cancel()
		if err != nil {
			why = err.Error()
		}
		for _, a := range c.Clients {
			ids := adv[a.NodeID]
			if len(ids) != want {
				why += fmt.Sprintf("node %s advertises %d warm; ", a.NodeID[:8], len(ids))
				continue
			}
			if local := localWarm(a); !slices.Equal(slices.Sorted(slices.Values(ids)), local) {
				why += fmt.Sprintf("node %s advertises %v, its driver has %v warm; ", a.NodeID[:8], ids, local)
			}
		}
		for _, a := range c.Clients {
			if got := poolAttr(c, a.NodeID, nodeattr.Claimed); got != "0" {
				why += fmt.Sprintf("node %s has %q claimed; ", a.NodeID[:8], got)
			}
		}
		if why == "" {
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	tb.Fatalf("cluster not at %d warm per node after %s: %s", want, within, why)
}

// localWarm is the pool's warm sandboxes as the node's driver published
// them for its device plugin, sorted.
func localWarm(a *nomadtest.Agent) []string {
	st, err := device.ReadState(device.StateDir(a.DataDir))
	if err != nil {
		return nil
	}
	for _, p := range st.Pools {
		if p.Name == clusterPool {
			return slices.Sorted(slices.Values(p.Warm))
		}
	}
	return nil
}

// poolAttr reads one of the pool's driver attributes of a node.
func poolAttr(c *nomadtest.Cluster, nodeID string, f nodeattr.Field) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, _, err := c.Server.Client.Nodes().Info(nodeID, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return err.Error()
	}
	return n.Attributes[nodeattr.Pool(clusterPool, f)]
}

// clusterSample is one job of a burst.
type clusterSample struct {
	startSample
	node string // the node the job ran on
}

// burst registers all jobs at once through the server, each from its own
// goroutine, and returns each one's sample once all have ended. The jobs
// stay registered.
func burst(c *nomadtest.Cluster, jobs []*api.Job) ([]clusterSample, []error) {
	samples := make([]clusterSample, len(jobs))
	errs := make([]error, len(jobs))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var done sync.WaitGroup
	gate := make(chan struct{})
	for i, job := range jobs {
		done.Go(func() {
			<-gate
			samples[i], errs[i] = clusterStart(ctx, c, job)
		})
	}
	close(gate)
	done.Wait()
	return samples, errs
}

// clusterStart registers job, follows its allocation to its node, and
// measures it as registerAndWaitLine does on one agent.
func clusterStart(ctx context.Context, c *nomadtest.Cluster, job *api.Job) (clusterSample, error) {
	s := clusterSample{startSample: startSample{jobID: *job.ID}}
	task := job.TaskGroups[0].Tasks[0].Name
	begin := time.Now()
	resp, _, err := c.Server.Client.Jobs().Register(job, (&api.WriteOptions{}).WithContext(ctx))
	if err != nil {
		return s, fmt.Errorf("register job %s: %w", s.jobID, err)
	}
	index := resp.JobModifyIndex
	for s.allocID == "" {
		allocs, meta, err := c.Server.Client.Jobs().Allocations(s.jobID, true, (&api.QueryOptions{WaitIndex: index, WaitTime: 10 * time.Second}).WithContext(ctx))
		if err != nil {
			return s, fmt.Errorf("allocations of job %s: %w", s.jobID, err)
		}
		if len(allocs) > 0 {
			s.allocID, s.node = allocs[0].ID, allocs[0].NodeID
		}
		index = max(index, meta.LastIndex)
	}
	a := c.Client(s.node)
	if a == nil {
		return s, fmt.Errorf("job %s placed on unknown node %s", s.jobID, s.node)
	}
	path := logPath(a, s.allocID, task)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for s.first == 0 {
		if b, err := os.ReadFile(path); err == nil && bytes.IndexByte(b, '\n') >= 0 {
			s.first, s.stdout = time.Since(begin), string(b)
			break
		}
		select {
		case <-ctx.Done():
			return s, fmt.Errorf("no stdout line from job %s (alloc %s on %s): %w", s.jobID, s.allocID, s.node[:8], ctx.Err())
		case <-tick.C:
		}
	}
	return s, finishSample(ctx, a, &s.startSample, begin, task)
}

// burstJobs makes n copies of jobs/cluster-burst.nomad.hcl named prefix-NN.
func burstJobs(tb testing.TB, c *nomadtest.Cluster, prefix string, n int) []*api.Job {
	jobs := make([]*api.Job, n)
	for i := range jobs {
		jobs[i] = benchJob(tb, c.Server, "cluster-burst.nomad.hcl", fmt.Sprintf("%s-%02d", prefix, i))
	}
	return jobs
}

// burstTally is what a burst did, counted from its samples.
type burstTally struct {
	ok, hits, misses int
	byNode           map[string]int // jobs per node
	hitsByNode       map[string]int
	twice            int // claims beyond the first of any sandbox
	exact            int // jobs that ran in the very sandbox the scheduler reserved
	first            []time.Duration
}

func tally(samples []clusterSample, errs []error, logf func(string, ...any)) burstTally {
	t := burstTally{byNode: map[string]int{}, hitsByNode: map[string]int{}}
	byEvent, byOutput := map[string]int{}, map[string]int{}
	failed := 0
	for i, s := range samples {
		if errs[i] == nil && s.dead && s.exit == 0 && strings.HasPrefix(s.stdout, "sandbox ") {
			t.ok++
		} else if failed++; failed <= 3 {
			logf("job %s (alloc %s) failed: err %v, exit %d, stdout %q, events:\n%s", s.jobID, s.allocID, errs[i], s.exit, s.stdout, s.events)
		}
		if s.node != "" {
			t.byNode[s.node[:8]]++
		}
		switch {
		case s.hit:
			t.hits++
			t.hitsByNode[s.node[:8]]++
		case s.sandbox != "":
			t.misses++
		}
		if s.sandbox != "" {
			byEvent[s.sandbox]++
		}
		if got, reserved := reservedFromOutput(s.stdout); got != "" {
			byOutput[got]++
			if got == reserved {
				t.exact++
			} else if s.hit {
				logf("job %s on %s: a hit in sandbox %s, reserved %s", s.jobID, s.node[:8], got[:8], reserved)
			}
		}
		if s.first > 0 {
			t.first = append(t.first, s.first)
		}
	}
	t.twice = max(dups(byEvent), dups(byOutput))
	return t
}

func (t burstTally) String() string {
	nodes := make([]string, 0, len(t.byNode))
	for n, c := range t.byNode {
		nodes = append(nodes, n+":"+strconv.Itoa(c)+"("+strconv.Itoa(t.hitsByNode[n])+" hit)")
	}
	slices.Sort(nodes)
	return fmt.Sprintf("%d ok, %d hits (%d in the reserved sandbox), %d misses, claimed twice %d; by node %s; first line p50 %s p90 %s max %s",
		t.ok, t.hits, t.exact, t.misses, t.twice, strings.Join(nodes, " "), pct(t.first, 0.5), pct(t.first, 0.9), pct(t.first, 1))
}

// blockedEvals lists the evaluations of jobs with prefix that are blocked.
func blockedEvals(tb testing.TB, c *nomadtest.Cluster, prefix string) []string {
	tb.Helper()
	evals, _, err := c.Server.Client.Evaluations().List(&api.QueryOptions{Filter: `Status == "blocked"`})
	if err != nil {
		tb.Fatalf("list evaluations: %v", err)
	}
	var out []string
	for _, e := range evals {
		if strings.HasPrefix(e.JobID, prefix) {
			out = append(out, e.JobID+"/"+e.ID[:8])
		}
	}
	return out
}

// purgeAll purges the jobs.
func purgeAll(tb testing.TB, c *nomadtest.Cluster, jobs []*api.Job) {
	tb.Helper()
	for _, j := range jobs {
		purgeJob(tb, c.Server, *j.ID)
	}
}

// reservedFromOutput reads "sandbox <sandbox alloc dir> reserved <instance>"
// (jobs/cluster-burst.nomad.hcl): the sandbox the job ran in and the device
// instance the scheduler gave it.
func reservedFromOutput(out string) (sandbox, reserved string) {
	line, _, _ := strings.Cut(out, "\n")
	f := strings.Fields(line)
	if len(f) != 4 || f[0] != "sandbox" || f[2] != "reserved" {
		return "", ""
	}
	// <data_dir>/alloc/<sandbox alloc id>/alloc
	return filepath.Base(filepath.Dir(f[1])), f[3]
}
