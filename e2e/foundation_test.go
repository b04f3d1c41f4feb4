package e2e

import (
	"context"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-pool/driver"
	"github.com/agentkernel/agentkernel-pool/internal/nodeattr"
	"github.com/agentkernel/agentkernel-pool/internal/nomadtest"
)

// TestDriverDetectedAndHealthy: a real Nomad agent loads the built plugin from its
// plugin_dir and shows it detected, healthy, with the version attribute.
func TestDriverDetectedAndHealthy(t *testing.T) {
	a := startAgent(t, poolBlock("dev", rawExecTemplate(t), 1, 4))
	d, ok := a.WaitDriver(driver.Name, 90*time.Second, func(d *api.DriverInfo) bool { return d.Healthy })
	if !ok {
		t.Fatalf("driver not healthy in time: %+v", d)
	}
	if !d.Detected {
		t.Fatalf("driver healthy but not detected: %+v", d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n, err := a.Node(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := n.Attributes[nodeattr.Version]; got != driver.Version {
		t.Errorf("node attribute driver.%s.version = %q, want %q", driver.Name, got, driver.Version)
	}

	// What an operator would run: nomad node status -self -verbose.
	out, err := exec.Command(nomadBin(t), "node", "status", "-address="+a.Addr, "-verbose", a.NodeID).CombinedOutput()
	if err != nil {
		t.Fatalf("nomad node status: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), driver.Name) || !strings.Contains(string(out), nodeattr.Version) {
		t.Errorf("nomad node status -verbose does not show the driver:\n%s", out)
	}
}

// TestBadPoolKeepsAgentRunning: a semantically bad plugin block never stops the
// agent; the driver is unhealthy and says which pool and field are wrong.
func TestBadPoolKeepsAgentRunning(t *testing.T) {
	cases := []struct {
		name, block string
		want        []string
	}{
		{"size over max", poolBlock("python", rawExecTemplate(t), 5, 2), []string{`pool "python"`, "size (5) must not exceed max (2)"}},
		{"missing jobspec", poolBlock("python", "/nonexistent/pool.nomad.hcl", 1, 2), []string{`pool "python"`, "jobspec", "no such file"}},
		{"wrong type", `config {
  pool "python" {
    jobspec = "` + rawExecTemplate(t) + `"
    size = "three"
  }
}`, []string{`pool "python"`, "size", "three"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := startAgent(t, tc.block)
			d, ok := a.WaitDriver(driver.Name, 60*time.Second, func(d *api.DriverInfo) bool {
				return d.Detected && !d.Healthy && strings.Contains(d.HealthDescription, "invalid plugin config")
			})
			if !ok {
				t.Fatalf("driver not reported unhealthy with a config error: %+v", d)
			}
			for _, w := range tc.want {
				if !strings.Contains(d.HealthDescription, w) {
					t.Errorf("health description %q does not mention %q", d.HealthDescription, w)
				}
			}
			if !a.Running() {
				t.Fatal("nomad agent stopped")
			}
		})
	}
}

func startAgent(t *testing.T, pluginConfig string) *nomadtest.Agent {
	t.Helper()
	if _, err := nomadtest.Binary(); err != nil {
		t.Skipf("skipping e2e: %v", err)
	}
	return nomadtest.Start(t, nomadtest.Options{PluginDir: nomadtest.BuildPlugin(t), PluginConfig: pluginConfig})
}

func nomadBin(t *testing.T) string {
	b, err := nomadtest.Binary()
	if err != nil {
		t.Skipf("skipping e2e: %v", err)
	}
	return b
}

func poolBlock(name, jobspec string, size, max int) string {
	return "config {\n  pool \"" + name + "\" {\n    jobspec = \"" + jobspec + "\"\n    size = " + itoa(size) + "\n    max = " + itoa(max) + "\n    claim_timeout = \"60s\"\n  }\n}"
}

func itoa(i int) string { return strconv.Itoa(i) }

// rawExecTemplate is the fast (development-only) warm template for tests.
func rawExecTemplate(t testing.TB) string {
	t.Helper()
	p, err := filepath.Abs("../example/pools/raw_exec.nomad.hcl")
	if err != nil {
		t.Fatal(err)
	}
	return p
}
