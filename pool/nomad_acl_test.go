package pool

import (
	"os"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-pool/internal/nomadapi"
	"github.com/agentkernel/agentkernel-pool/internal/nomadtest"
)

// TestNomadACL runs the pool on an ACL-enabled agent with a token that holds
// only the project's least-privilege policy (example/acl.hcl), its warm jobs
// in the namespace the policy names (as README's install steps say):
// templates, dispatch, inventory, claim, release, reconcile and status all
// work.
func TestNomadACL(t *testing.T) {
	rules, err := os.ReadFile("../example/acl.hcl")
	if err != nil {
		t.Skipf("no policy to test: %v", err)
	}
	a := nomadtest.Start(t, nomadtest.Options{ACL: true})
	c := ctx(t, 30*time.Second)
	const ns = "agentkernel-pool" // the namespace example/acl.hcl grants rights in
	if _, err := a.Client.Namespaces().Register(&api.Namespace{Name: ns}, (&api.WriteOptions{}).WithContext(c)); err != nil {
		t.Fatalf("create namespace %s: %v", ns, err)
	}
	if _, err := a.Client.ACLPolicies().Upsert(&api.ACLPolicy{Name: "agentkernel-pool", Rules: string(rules)},
		(&api.WriteOptions{}).WithContext(c)); err != nil {
		t.Fatalf("apply policy: %v", err)
	}
	tok, _, err := a.Client.ACLTokens().Create(&api.ACLToken{Name: "agentkernel-pool", Type: "client", Policies: []string{"agentkernel-pool"}},
		(&api.WriteOptions{}).WithContext(c))
	if err != nil {
		t.Fatalf("create token: %v", err)
	}
	client, err := nomadapi.NewClient(nomadapi.Config{Address: a.Addr, Token: tok.SecretID})
	if err != nil {
		t.Fatal(err)
	}
	m := namespaceManager(t, client, a.NodeID, ns, Config{Name: "acl", Jobspec: rawExecJobspec(t, "3600"), Size: 2, Max: 3})
	waitFor(t, time.Minute, "2 warm", func() bool { return m.Stats()["acl"].Warm == 2 })
	if err := m.Health(); err != nil {
		t.Fatalf("inventory with the limited token: %v", err)
	}
	cl, err := m.Claim(ctx(t, 30*time.Second), "acl", Owner{AllocID: "5e0e5e0e-0000-4000-8000-000000000000"})
	if err != nil {
		t.Fatalf("claim: %v", err)
	}
	waitFor(t, 10*time.Second, "claim listed", func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		_, listed := m.inv.claims[cl.AllocID]
		return listed
	})
	m.reconcile(ctx(t, 30*time.Second)) // the owner does not exist: cleaned
	if _, err := m.readVariable(ctx(t, 10*time.Second), ClaimPath("acl", cl.AllocID)); err == nil {
		t.Fatal("reconcile kept a claim whose owner does not exist")
	}
	cl, err = m.Claim(ctx(t, 30*time.Second), "acl", Owner{})
	if err != nil {
		t.Fatalf("claim: %v", err)
	}
	if err := m.Release(ctx(t, 30*time.Second), cl); err != nil {
		t.Fatalf("release: %v", err)
	}
	st, err := Status(ctx(t, 10*time.Second), client, ns)
	if err != nil || len(st) != 1 || st[0].Pool != "acl" {
		t.Fatalf("status with the limited token: %+v, %v", st, err)
	}
}
