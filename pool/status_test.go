package pool

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-pool/internal/nodeattr"
	"github.com/agentkernel/agentkernel-pool/pool/pooltest"
)

// printed is PrintStatus's output with each line's runs of spaces folded.
func printed(t *testing.T, st []NodePoolStatus) string {
	t.Helper()
	var b bytes.Buffer
	if err := PrintStatus(&b, st); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	for i, l := range lines {
		lines[i] = strings.Join(strings.Fields(l), " ")
	}
	return strings.Join(lines, "\n")
}

// status shows why a pool fails, as the plugin on its node publishes it: a
// pool whose instances die, one whose template never registered (it has no
// job, only the node's attributes), and every pool of a node whose driver is
// unhealthy. A pool that recovers leaves the list.
func TestStatusShowsPoolErrors(t *testing.T) {
	m, srv := fakeManager(t, nil, Config{Name: "py", Size: 1, Max: 3})
	waitFor(t, 5*time.Second, "1 warm", func() bool { return m.Stats()["py"].Warm == 1 })
	attr := func(pool string, f nodeattr.Field, v string) {
		srv.SetDriverAttr(pooltest.NodeID, nodeattr.Driver, nodeattr.Pool(pool, f), v)
	}
	attr("py", nodeattr.Target, "1")
	attr("py", nodeattr.Error, "pool \"py\": template failing: 3 instances in a row died before turning warm: task \"sandbox\": Driver Failure:\n\tfailed to launch command with executable \"/bin/nope\"")
	for what, v := range map[nodeattr.Field]string{nodeattr.Size: "2", nodeattr.Max: "4", nodeattr.Target: "2", nodeattr.Error: `pool "broken": read jobspec /etc/nomad.d/pools/broken.nomad.hcl: no such file or directory`} {
		attr("broken", what, v)
	}

	st, err := Status(ctx(t, 5*time.Second), srv.Client(), "")
	if err != nil {
		t.Fatal(err)
	}
	want := `NODE POOL SIZE TARGET MAX WARM PREPARING STARTING CLAIMED FAILED
fake-node broken 2 2 4 0 0 0 0 0
fake-node py 1 1 3 1 0 0 0 0

Pool errors:
fake-node broken pool "broken": read jobspec /etc/nomad.d/pools/broken.nomad.hcl: no such file or directory
fake-node py pool "py": template failing: 3 instances in a row died before turning warm: task "sandbox": Driver Failure: failed to launch command with executable "/bin/nope"`
	if got := printed(t, st); got != want {
		t.Fatalf("status of failing pools:\n%s\nwant\n%s", got, want)
	}
	if len(st) != 2 || st[0].Pool != "broken" || st[0].NodeID != pooltest.NodeID || !strings.Contains(st[1].Error, "/bin/nope") {
		t.Fatalf("rows %+v", st)
	}

	// An unhealthy driver publishes no pool attributes: those there are old.
	srv.SetDriverHealth(pooltest.NodeID, nodeattr.Driver, false, "starting: connecting to the nomad api")
	st, err = Status(ctx(t, 5*time.Second), srv.Client(), "")
	if err != nil {
		t.Fatal(err)
	}
	if got := printed(t, st); !strings.HasSuffix(got, `Pool errors:
fake-node broken driver unhealthy: starting: connecting to the nomad api
fake-node py driver unhealthy: starting: connecting to the nomad api`) {
		t.Fatalf("status with the driver unhealthy:\n%s", got)
	}

	// Both fixed: the plugin publishes empty errors.
	srv.SetDriverHealth(pooltest.NodeID, nodeattr.Driver, true, "ready")
	attr("py", nodeattr.Error, "")
	attr("broken", nodeattr.Error, "")
	st, err = Status(ctx(t, 5*time.Second), srv.Client(), "")
	if err != nil {
		t.Fatal(err)
	}
	if got := printed(t, st); strings.Contains(got, "Pool errors") || strings.Count(got, "\n") != 2 {
		t.Fatalf("status of working pools:\n%s", got)
	}
}

// A template registered before its node did has no node name in its meta:
// status takes it from the node list.
func TestStatusNamesNodesFromTheNodeList(t *testing.T) {
	st := addNodeAttrs([]NodePoolStatus{{NodeID: pooltest.NodeID, Pool: "py"}},
		[]*api.NodeListStub{{ID: pooltest.NodeID, Name: "node-1"}})
	if len(st) != 1 || st[0].NodeName != "node-1" || st[0].Error != "" || st[0].HasTarget {
		t.Fatalf("rows %+v", st)
	}
}

// Status tells sandboxes preparing (running, their readiness check not
// passed yet) from warm ones by the count the plugin on the node publishes:
// Nomad's lists show both as running.
func TestStatusShowsPreparing(t *testing.T) {
	m, srv := fakeManager(t, nil, Config{Name: "py", Size: 3, Max: 4})
	waitFor(t, 5*time.Second, "3 warm", func() bool { return m.Stats()["py"].Warm == 3 })
	srv.SetDriverAttr(pooltest.NodeID, nodeattr.Driver, nodeattr.Pool("py", nodeattr.Preparing), "2")
	st, err := Status(ctx(t, 5*time.Second), srv.Client(), "")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := printed(t, st), "NODE POOL SIZE TARGET MAX WARM PREPARING STARTING CLAIMED FAILED\nfake-node py 3 - 4 1 2 0 0 0"; got != want {
		t.Fatalf("status:\n%s\nwant\n%s", got, want)
	}
}
