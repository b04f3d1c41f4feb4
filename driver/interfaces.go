package driver

import (
	"context"
	"io"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-pool/driver/sandbox"
	"github.com/agentkernel/agentkernel-pool/driver/shipper"
	"github.com/agentkernel/agentkernel-pool/internal/nomadapi"
	"github.com/agentkernel/agentkernel-pool/plugin"
	"github.com/agentkernel/agentkernel-pool/pool"
)

// The driver's seams: what it needs of the warm pools and of Nomad. The
// production side is nomadBackend (backend.go) and pool.Manager; the unit
// tests run the whole task lifecycle over fakes of these.

// Pool is what the driver needs of a warm pool.
type Pool interface {
	Claim(ctx context.Context, pool string, owner pool.Owner) (*pool.Claim, error)
	// ClaimAlloc claims allocID if it is warm, else as Claim does (see pool.Manager.ClaimAlloc).
	ClaimAlloc(ctx context.Context, pool, allocID string, owner pool.Owner) (*pool.Claim, error)
	Release(ctx context.Context, c *pool.Claim) error
	// Adopt makes sure a recovered claim's record exists (see pool.Manager.Adopt).
	Adopt(ctx context.Context, c *pool.Claim) error
	Stats() map[string]pool.Stats
	Warm() []pool.WarmAlloc
}

// Backend is how the driver reaches Nomad and the sandboxes (nomadBackend in
// production; tests substitute a fake). Everything but StartPool works without
// the Nomad API answering: at agent start Nomad recovers tasks before its HTTP
// API listens, so recovery must not wait for the API.
type Backend interface {
	Runner
	// AllocDone blocks until the allocation is terminal or gone and says which; it
	// returns an error only when ctx ends or the backend stops.
	AllocDone(ctx context.Context, namespace, allocID string) (string, error)
	// Usage reads a task's resource usage inside an allocation; nil when there
	// is none yet.
	Usage(ctx context.Context, namespace, allocID, task string) (*plugin.TaskResourceUsage, error)
	// Ship copies a run's output into the task's logs until the run has exited
	// and its output is drained. Ending ctx leaves the shipping to go on.
	Ship(ctx context.Context, job shipper.Job) (sandbox.ExitStatus, error)
	// Check probes the Nomad API for the fingerprint; nil error means it answers.
	Check(ctx context.Context) error
	// StartPool connects to the Nomad API and starts the pools; it blocks until the
	// API answers or ctx ends.
	StartPool(ctx context.Context) (Pool, error)
	// Stop stops what StartPool started.
	Stop()
}

// Runner runs processes inside an allocation (see package sandbox).
type Runner interface {
	Start(ctx context.Context, ref sandbox.Ref, s sandbox.Spec) (started <-chan error, err error)
	Signal(ctx context.Context, ref sandbox.Ref, runID, sig string) error
	Exec(ctx context.Context, ref sandbox.Ref, runID string, cmd []string, tty bool, stdin io.Reader, stdout, stderr io.Writer, resize <-chan api.TerminalSize) (int, error)
	// End ends the sandbox's processes the host can reach (see
	// sandbox.Runner.End) and says how many it signalled.
	End(ref sandbox.Ref, runID string, nsPID int) (int, error)
	SessionInfo(allocID string) (sandbox.SessionInfo, bool)
	// LaunchState says what a launch whose outcome Start has not delivered
	// yet is doing (for the task dumps); ok is false when none awaits one.
	LaunchState(allocID string) (state string, ok bool)
}

// BackendFactory builds the backend for a validated config, without any remote
// call. Every API call it makes sends token as it is at that call: a rotated
// token_file changes the value, never the backend. The backend tells metrics
// of its pools' warm-ups, dispatches and purges and of its API calls.
type BackendFactory func(cfg *Config, token *nomadapi.Token, logger hclog.Logger, onChange func(), metrics Metrics) (Backend, error)

// Metrics is told of what a backend's pools do and of every Nomad API call it
// makes (/metrics).
type Metrics interface {
	pool.Observer
	nomadapi.CallObserver
}
