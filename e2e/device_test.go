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
