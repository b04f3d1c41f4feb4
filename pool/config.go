package pool

import (
	"context"
	"fmt"
	"regexp"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-pool/internal/nomadapi"
)

// What a Manager is configured with: its pools and its options, their
// defaults, and how they are checked.

// Defaults for optional Config and Options fields: the one home of each,
// which the driver's plugin block refers to (driver/about.go). Readiness's
// defaults live with readiness (DefaultReadyTimeout, ready.go).
const (
	// DefaultNamespace is where warm jobs and claim records live.
	DefaultNamespace = "default"
	// DefaultClaimTimeout bounds a claim whose context has no deadline.
	DefaultClaimTimeout = 30 * time.Second
	// DefaultScaleDownAfter is how long demand must stay lower before the
	// warm target falls (demand.go).
	DefaultScaleDownAfter = 5 * time.Minute
)

// Config is one pool on this node.
type Config struct {
	Name           string        // letters, digits, '-' and '_'; part of job IDs and variable paths
	Jobspec        string        // path of the warm template jobspec (one group, one task)
	Size           int           // warm allocations kept ready
	Max            int           // warm + starting + claimed never exceeds this
	ClaimTimeout   time.Duration // how long a claim may wait when its context has no deadline
	MaxWarm        int           // ceiling of the demand-driven warm target (demand.go); 0: Size, a fixed pool
	ScaleDownAfter time.Duration // lower demand for this long lowers the target; 0: DefaultScaleDownAfter
	ReadyTimeout   time.Duration // a warm allocation not ready by then (from its task's start) is replaced (ready.go); 0: DefaultReadyTimeout
}

// Options configures a Manager.
type Options struct {
	Client *api.Client
	// Token, when set, is the ACL token of every call, read at each call, so
	// a new token takes effect without a new Manager; nil means the client's.
	Token     *nomadapi.Token
	NodeID    string // the Nomad node whose pools this Manager keeps
	Namespace string // where warm jobs and claim records live; default "default"
	Pools     []Config
	Logger    hclog.Logger
	// OnChange is called, from a goroutine of the Manager, after the counts of
	// any pool changed. Calls are coalesced, not queued; it may block.
	OnChange func()
	// Prepare, when set, is called once for every allocation whose task
	// runs, before it counts as warm (see prepare.go); an error replaces the
	// allocation and counts as a failure of its pool's template.
	Prepare func(ctx context.Context, w WarmAlloc) error
	// CheckReady, when set, runs the ready command of a template that has
	// one (w.ReadyCommand) once in a prepared allocation (see ready.go). An
	// error is no verdict (the way there failed), except one that wraps
	// context.DeadlineExceeded once ctx has ended: the command did not
	// finish. Without it, a template with a ready command is refused.
	CheckReady func(ctx context.Context, w WarmAlloc) (ReadyResult, error)
	// Discard, when set, is told an unclaimed allocation the pool retires
	// (scale-down, a stale template), once its retirement is on record and
	// before it is purged, so what Prepare opened for it is closed at once
	// rather than when Nomad has stopped it.
	Discard  func(allocID string)
	Observer Observer // told of warm-ups, dispatches and purges; may be nil
	// WriteBehind hands out a claim before its record is written (see
	// record.go): the caller must mark the allocation as used before it
	// trusts the claim across a crash, and Adopt it when it recovers it.
	WriteBehind bool
}

// poolName is what a pool may be called: it becomes part of job IDs,
// Variable paths and node attribute names.
var poolName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,39}$`)

// CheckName says whether name can name a pool, and why not.
func CheckName(name string) error {
	if !poolName.MatchString(name) {
		return fmt.Errorf("pool %q: name: want 1-40 of a-z, 0-9, _ and -, starting with a letter or digit", name)
	}
	return nil
}

// validateConfig checks one pool's Config; its error names the pool and the field.
func validateConfig(c Config) error {
	switch {
	case CheckName(c.Name) != nil:
		return CheckName(c.Name)
	case c.Jobspec == "":
		return fmt.Errorf("pool %q: jobspec is required", c.Name)
	case c.Size < 0:
		return fmt.Errorf("pool %q: size %d is negative", c.Name, c.Size)
	case c.Max < 1:
		return fmt.Errorf("pool %q: max %d must be at least 1", c.Name, c.Max)
	case c.Max < c.Size:
		return fmt.Errorf("pool %q: max %d is less than size %d", c.Name, c.Max, c.Size)
	}
	return validateDemand(c)
}
