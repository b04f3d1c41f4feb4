package driver

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/agentkernel/agentkernel-pool/pool"
)

// The driver state in task handles is a stored format: Nomad hands handles
// written by an older plugin to RecoverTask after an upgrade. This test pins
// its encoding; if it fails, the change needs a stateVersion bump and a
// decoder for the old version, not a new golden string.
func TestDriverStateEncodingIsStable(t *testing.T) {
	at := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	st := driverState{
		Claim: claimStateOf(&pool.Claim{Pool: "dev", AllocID: "sandbox-1", JobID: "warm/dispatch-1", TaskName: "sandbox", NodeID: "node-1",
			Owner: pool.Owner{AllocID: "alloc-1", TaskName: "agent", TaskID: "alloc-1/agent/1", JobID: "job", Namespace: "default"},
			Hit:   true, Waited: time.Millisecond, ClaimedAt: at}),
		Namespace: "agentkernel-pool", HostAllocDir: "/nomad/alloc/sandbox-1", RunID: "alloc-1-agent", Command: true,
		OffsetsPath: "/nomad/alloc/alloc-1/agent/private/offsets", StartedAt: at, ClaimLatency: 2 * time.Millisecond,
		Files: true, FilesWay: filesMount, NamespacePID: 42, FilesUID: 65534, FilesGID: 65534,
	}
	const golden = `{"claim":{"Pool":"dev","AllocID":"sandbox-1","JobID":"warm/dispatch-1","TaskName":"sandbox","NodeID":"node-1",` +
		`"Owner":{"AllocID":"alloc-1","TaskName":"agent","TaskID":"alloc-1/agent/1","JobID":"job","Namespace":"default"},` +
		`"Hit":true,"Waited":1000000,"ClaimedAt":"2026-11-29T12:00:00Z"},"namespace":"agentkernel-pool",` +
		`"host_alloc_dir":"/nomad/alloc/sandbox-1","run_id":"alloc-1-agent","command":true,` +
		`"offsets_path":"/nomad/alloc/alloc-1/agent/private/offsets","started_at":"2026-11-29T12:00:00Z","claim_latency":2000000,` +
		`"files":true,"files_way":"mount","ns_pid":42,"files_uid":65534,"files_gid":65534}`
	b, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != golden {
		t.Fatalf("driver state encoding changed (stateVersion %d):\n got %s\nwant %s", stateVersion, b, golden)
	}
	var back driverState
	if err := json.Unmarshal([]byte(golden), &back); err != nil || back != st {
		t.Fatalf("decoding the stored form gives %+v (%v), want %+v", back, err, st)
	}
	if c := back.Claim.claim(); c.AllocID != "sandbox-1" || c.Owner.TaskID != "alloc-1/agent/1" || !c.ClaimedAt.Equal(at) {
		t.Errorf("the claim for Release: %+v", c)
	}
}
