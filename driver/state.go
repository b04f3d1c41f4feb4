package driver

import (
	"time"

	"github.com/agentkernel/agentkernel-pool/driver/sandbox"
	"github.com/agentkernel/agentkernel-pool/pool"
)

// The driver state a task handle carries, which Nomad keeps across agent
// restarts and hands back to RecoverTask: its JSON encoding is a stored
// format. state_test.go fails when it changes; change it only with a
// stateVersion bump and a decoder for the handles already out there.

// stateVersion is the schema version of driverState in task handles.
const stateVersion = 1

// driverState is everything needed to recover a task, since after an agent
// restart the task's config block is gone from the handle.
type driverState struct {
	Claim        claimState    `json:"claim"`
	Namespace    string        `json:"namespace"` // where the warm job lives
	HostAllocDir string        `json:"host_alloc_dir"`
	RunID        string        `json:"run_id"`
	Command      bool          `json:"command"` // false: the task holds the sandbox
	OffsetsPath  string        `json:"offsets_path"`
	StartedAt    time.Time     `json:"started_at"`
	ClaimLatency time.Duration `json:"claim_latency"`
	// Files: the task's local/, secrets/ and alloc/data were copied (or
	// mounted, FilesWay) into the sandbox, owned by FilesUID:FilesGID, and
	// are copied back (files.go). FilesWay "direct" copies nothing.
	Files    bool   `json:"files,omitempty"`
	FilesWay string `json:"files_way,omitempty"`
	// NamespacePID is the sandbox process whose mount namespace got the
	// mount (FilesWay "mount"), to find it again for the unmount.
	NamespacePID int `json:"ns_pid,omitempty"`
	FilesUID     int `json:"files_uid,omitempty"`
	FilesGID     int `json:"files_gid,omitempty"`
}

func (s *driverState) ref() sandbox.Ref {
	return sandbox.Ref{Namespace: s.Namespace, AllocID: s.Claim.AllocID, Task: s.Claim.TaskName, HostAllocDir: s.HostAllocDir}
}

// claimState is a claim as a task handle keeps it. Its JSON names are its own
// (those pool.Claim had when handles first carried it), so a change to
// pool.Claim cannot silently change what recovery reads.
type claimState struct {
	Pool      string        `json:"Pool"`
	AllocID   string        `json:"AllocID"`
	JobID     string        `json:"JobID"`
	TaskName  string        `json:"TaskName"`
	NodeID    string        `json:"NodeID"`
	Owner     ownerState    `json:"Owner"`
	Hit       bool          `json:"Hit"`
	Waited    time.Duration `json:"Waited"`
	ClaimedAt time.Time     `json:"ClaimedAt"`
}

type ownerState struct {
	AllocID   string `json:"AllocID"`
	TaskName  string `json:"TaskName"`
	TaskID    string `json:"TaskID"`
	JobID     string `json:"JobID"`
	Namespace string `json:"Namespace"`
}

func claimStateOf(c *pool.Claim) claimState {
	return claimState{Pool: c.Pool, AllocID: c.AllocID, JobID: c.JobID, TaskName: c.TaskName, NodeID: c.NodeID,
		Owner: ownerState(c.Owner), Hit: c.Hit, Waited: c.Waited, ClaimedAt: c.ClaimedAt}
}

// claim is the pool's claim, for Release.
func (c claimState) claim() *pool.Claim {
	return &pool.Claim{Pool: c.Pool, AllocID: c.AllocID, JobID: c.JobID, TaskName: c.TaskName, NodeID: c.NodeID,
		Owner: pool.Owner(c.Owner), Hit: c.Hit, Waited: c.Waited, ClaimedAt: c.ClaimedAt}
}
