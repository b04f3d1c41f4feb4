package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-pool/internal/nomadtest"
)

// TestPoolNamespaces: a pool limited to namespace "agents". A sandbox job in
// namespace "others" fails at once with a message naming the pool, its
// namespace and the allowed one, and claims nothing; the same job in "agents"
// runs in a warm sandbox.
func TestPoolNamespaces(t *testing.T) {
	if _, err := nomadtest.Binary(); err != nil {
		t.Skipf("skipping e2e: %v", err)
	}
	block := strings.Replace(poolBlock("dev", rawExecTemplate(t), 1, 4), "    claim_timeout",
		"    namespaces = [\"agents\"]\n    claim_timeout", 1)
	a := nomadtest.Start(t, nomadtest.Options{PluginDir: nomadtest.BuildPlugin(t), PluginConfig: block})
	for _, ns := range []string{"agents", "others"} {
		if _, err := a.Client.Namespaces().Register(&api.Namespace{Name: ns}, nil); err != nil {
			t.Fatalf("create namespace %s: %v", ns, err)
		}
	}
	waitWarm(t, a, "dev", 1)

	in := func(ns string) *api.Client {
		c, err := api.NewClient(&api.Config{Address: a.Addr, Namespace: ns})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	job := func(ns string) string {
		return strings.Replace(jobHCL(t, "command.nomad.hcl"), `job "e2e-command" {`, `job "e2e-command" {`+"\n  namespace = \""+ns+"\"", 1)
	}

	refused := runJobWith(t, in("others"), job("others"))
	ts := waitTask(t, a, refused.ID, "agent", "dead", 60*time.Second)
	want := `pool "dev" does not serve namespace "others"; it serves namespaces: agents`
	if !ts.Failed || !strings.Contains(events(ts), want) {
		t.Errorf("task in namespace others: failed=%v, events:\n%s\nwant a failure saying %q", ts.Failed, events(ts), want)
	}
	if strings.Contains(events(ts), "Claimed warm sandbox") || len(claimVars(t, a, "dev")) != 0 {
		t.Errorf("a refused task claimed a sandbox; events:\n%s", events(ts))
	}

	served := runJobWith(t, in("agents"), job("agents"))
	ts = waitTask(t, a, served.ID, "agent", "dead", 60*time.Second)
	if code, ok := exitCode(ts); !ok || code != 3 || !strings.Contains(events(ts), "Claimed warm sandbox") {
		t.Errorf("task in namespace agents: exit code %d (found %v), want 3 from a warm sandbox; events:\n%s", code, ok, events(ts))
	}
}
