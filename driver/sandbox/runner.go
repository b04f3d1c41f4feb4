package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"path/filepath"
	"regexp"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-pool/driver/allocfs"
)

var (
	// ErrAlreadyLaunched means the run id was launched before in this allocation:
	// nothing was started again; follow the earlier run instead.
	ErrAlreadyLaunched = errors.New("run was already launched")
	// ErrNoRun means the host has no record of the run: never launched, or the
	// allocation's directory is gone.
	ErrNoRun = errors.New("run not found")
	// ErrAllocGone means the sandbox allocation or its task is no longer running.
	ErrAllocGone = errors.New("sandbox allocation is gone")
)

// Ref names a sandbox: a task of a running allocation on this node.
type Ref struct {
	Namespace string
	AllocID   string
	Task      string
	// HostAllocDir is the allocation's directory on this host, e.g.
	// filepath.Join(filepath.Dir(localTaskCfg.AllocDir), AllocID).
	HostAllocDir string
}

// RunDir is where the run's pid, exit and output files live on the host. It
// is for messages: every access to what is in it goes through the boundary
// (files), since the sandbox can replace anything there.
func (r Ref) RunDir(runID string) string {
	return filepath.Join(r.HostAllocDir, "alloc", runDirName, runID)
}

// files is the sandbox's allocation dir on the host, behind the boundary.
func (r Ref) files() allocfs.Dir { return allocfs.New(r.HostAllocDir, r.AllocID) }

// runRel is a run's dir relative to the allocation dir.
func runRel(runID string) string { return path.Join("alloc", runDirName, runID) }

// secretsRel is the sandbox task's secrets dir relative to the allocation dir.
func (r Ref) secretsRel() string { return path.Join(r.Task, "secrets") }

// envRel is a run's env file relative to the allocation dir.
func (r Ref) envRel(runID string) string {
	return path.Join(r.secretsRel(), "agentkernel-"+runID+".env")
}

// RunExists reports whether the run's dir is there on the host; false once
// the sandbox is purged. A sandbox that replaced it is an error.
func (r Ref) RunExists(runID string) (bool, error) {
	if err := checkRunID(runID); err != nil {
		return false, err
	}
	return r.files().Exists(runRel(runID))
}

// Used reports whether a run dir is in the sandbox: a run was started
// there. It is the second look, beside the hand-out mark (Marked), which is
// the one that holds: the run dirs are made from the host before any command
// of the claim runs (launch.go), but they sit in the sandbox's alloc/, which
// its command can rename.
func (r Ref) Used() (bool, error) {
	entries, err := r.files().ReadDir(path.Join("alloc", runDirName))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	for _, e := range entries {
		if e.IsDir() {
			return true, nil
		}
	}
	return false, nil
}

func (r Ref) short() string {
	if len(r.AllocID) > 8 {
		return r.AllocID[:8]
	}
	return r.AllocID
}

// Spec is what Launch runs. Without Command, Launch only prepares the run (its
// dir and env file) so that Exec has the env.
type Spec struct {
	ID      string // run id: [A-Za-z0-9._-], at most 128, unique per allocation
	Command string
	Args    []string
	Env     map[string]string
}

// Runner runs commands in sandboxes through the Nomad API.
type Runner struct {
	// Client runs the execs. Its transport must be the API client's own
	// (not a metered one, see nomadapi.Config.Calls): its websockets need it.
	Client *api.Client
	// Token, when set, is read at each call for the ACL token to send, so a
	// rotated token needs no new Runner; nil sends the client's own.
	Token  interface{ Secret() string }
	Logger hclog.Logger

	// Zero values take the Default* constants.
	LaunchTimeout time.Duration // one launch exec round trip
	CallTimeout   time.Duration // signal, allocation lookups
	PollInterval  time.Duration // how often Follow looks for output
	MaxSessions   int           // launch sessions held open at most (DefaultMaxSessions)

	// OnSessionLost, when set, is told the allocation whose launch session
	// ended before a Launch took it, so it can be primed again.
	OnSessionLost func(allocID string)

	// OnCall, when set, is told of every exec through the Nomad API as it
	// ends: its operation (OpExec, OpExecSession), how long it took and the
	// API client's error.
	OnCall func(op string, took time.Duration, err error)

	mu       sync.Mutex
	sessions map[string]*session // open launch sessions, by allocation ID
	launches map[string]string   // launches awaiting their outcome, by allocation ID (LaunchState)

	// exec replaces the Nomad API transport in tests.
	exec execFunc
}

// execFunc runs one command in the sandbox and returns its exit code.
type execFunc func(ctx context.Context, ref Ref, tty bool, cmd []string,
	stdin io.Reader, stdout, stderr io.Writer, resize <-chan api.TerminalSize) (int, error)

var runIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$`)

func checkRunID(id string) error {
	if !runIDPattern.MatchString(id) {
		return fmt.Errorf("invalid run id %q: want 1 to 128 of [A-Za-z0-9._-], not starting with a dot", id)
	}
	return nil
}

// query is the options of one API call: bound to ctx, in namespace ns, with
// the token as it is now.
func (r *Runner) query(ctx context.Context, ns string) *api.QueryOptions {
	q := (&api.QueryOptions{Namespace: ns}).WithContext(ctx)
	if r.Token != nil {
		q.AuthToken = r.Token.Secret()
	}
	return q
}

func (r *Runner) logger() hclog.Logger {
	if r.Logger == nil {
		return hclog.NewNullLogger()
	}
	return r.Logger
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// withTimeout bounds ctx by d unless it already ends sooner.
func withTimeout(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= d {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}
