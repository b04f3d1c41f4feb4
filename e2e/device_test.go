package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-pool/device"
	"github.com/agentkernel/agentkernel-pool/internal/nomadtest"
)

// The device plugin against a real agent: the agent loads the same binary
// under its second name, `nomad node status -verbose` shows the pool's
// device group with one instance per warm sandbox, and a job asking for the
// device runs in the very sandbox the scheduler reserved for it.
func TestDevicePluginOnAgent(t *testing.T) {
	if _, err := nomadtest.Binary(); err != nil {
		t.Skipf("skipping e2e: %v", err)
	}
	const size = 2
	a := nomadtest.Start(t, nomadtest.Options{PluginDir: nomadtest.BuildPlugin(t),
		PluginConfig: "config {\n  pool \"" + clusterPool + "\" {\n    jobspec = \"" + rawExecTemplate(t) + "\"\n    size = 2\n    max = 4\n    device = true\n  }\n}",
		ExtraConfig:  "plugin \"" + nomadtest.DevicePluginName + "\" {\n  args = [\"" + device.Arg + "\"]\n  config {}\n}\n",
	})
	c := &nomadtest.Cluster{Server: a, Clients: []*nomadtest.Agent{a}}
	waitAdvertised(t, c, size, 90*time.Second)

	out, _, code := nomadCLI(t, a, "", "node", "status", "-verbose", a.NodeID)
	group := device.Vendor + "/" + device.Type + "/" + clusterPool
	if code != 0 || !strings.Contains(out, group) || !strings.Contains(out, group+".cold") {
		t.Fatalf("node status -verbose (exit %d) does not show %s and its cold slots:\n%s", code, group, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	adv, err := advertised(ctx, c)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range adv[a.NodeID] {
		if !strings.Contains(out, id[:8]) {
			t.Errorf("node status -verbose does not list warm instance %s", id)
		}
	}

	samples, errs := burst(c, []*api.Job{benchJob(t, a, "cluster-burst.nomad.hcl", "device-one")})
	tl := tally(samples, errs, t.Logf)
	t.Logf("one job: %s", tl)
	if tl.ok != 1 || tl.hits != 1 || tl.exact != 1 {
		t.Fatalf("want one job run as a hit in the sandbox the scheduler reserved: %s\nstdout %q", tl, samples[0].stdout)
	}
}

// A job asking for a warm sandbox only waits, blocked, while none is free,
// and is placed once one is: here both warm sandboxes are held by two such
// jobs (max 2: no more can start), two more wait (one with the group
// constraint on ${node.unique.id} the README asks for, one without), and
// once the holders stop, the pool's new warm sandboxes go to the waiting
// jobs.
func TestWarmOnlyJobWaitsForAWarmSandbox(t *testing.T) {
	if _, err := nomadtest.Binary(); err != nil {
		t.Skipf("skipping e2e: %v", err)
	}
	const size = 2
	a := nomadtest.Start(t, nomadtest.Options{PluginDir: nomadtest.BuildPlugin(t),
		PluginConfig: "config {\n  pool \"" + clusterPool + "\" {\n    jobspec = \"" + rawExecTemplate(t) + "\"\n    size = 2\n    max = 2\n    device = true\n  }\n}",
		ExtraConfig:  "plugin \"" + nomadtest.DevicePluginName + "\" {\n  args = [\"" + device.Arg + "\"]\n  config {}\n}\n",
	})
	c := &nomadtest.Cluster{Server: a, Clients: []*nomadtest.Agent{a}}
	waitAdvertised(t, c, size, 90*time.Second)

	register := func(id string, escape bool) {
		job := benchJob(t, a, "warm-only.nomad.hcl", id)
		if !escape {
			job.TaskGroups[0].Constraints = nil
		}
		if _, _, err := a.Client.Jobs().Register(job, nil); err != nil {
			t.Fatalf("register %s: %v", id, err)
		}
	}
	running := func(id string) bool {
		allocs, _, err := a.Client.Jobs().Allocations(id, false, nil)
		return err == nil && len(allocs) == 1 && allocs[0].ClientStatus == api.AllocClientStatusRunning
	}
	register("hold-1", true)
	register("hold-2", true)
	waitFor(t, 60*time.Second, "both warm sandboxes held", func() bool { return running("hold-1") && running("hold-2") })
	// Nothing warm is offered until the node update says so: wait for it,
	// so the next two jobs find none.
	waitFor(t, 60*time.Second, "no warm sandbox offered", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		adv, err := advertised(ctx, c)
		return err == nil && len(adv[a.NodeID]) == 0
	})
	register("wait-escaped", true)
	register("wait-plain", false)
	time.Sleep(3 * time.Second)
	blocked := blockedEvals(t, c, "wait-")
	if len(blocked) != 2 {
		t.Fatalf("blocked evaluations %v, want the two waiting jobs'", blocked)
	}
	purgeJob(t, a, "hold-1")
	purgeJob(t, a, "hold-2")
	begin := time.Now()
	waitFor(t, 90*time.Second, "the escaped job placed and running", func() bool { return running("wait-escaped") })
	t.Logf("the job with the constraint runs %s after the holders stopped", time.Since(begin).Round(time.Second))
	waitFor(t, 90*time.Second, "the other job placed and running", func() bool { return running("wait-plain") })
	t.Logf("the job without it runs %s after the holders stopped", time.Since(begin).Round(time.Second))
	purgeJob(t, a, "wait-escaped")
	purgeJob(t, a, "wait-plain")
}
