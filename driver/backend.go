package driver

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-pool/driver/sandbox"
	"github.com/agentkernel/agentkernel-pool/driver/shipper"
	"github.com/agentkernel/agentkernel-pool/internal/nomadapi"
	"github.com/agentkernel/agentkernel-pool/plugin"
	"github.com/agentkernel/agentkernel-pool/pool"
)

// nomadBackend is the production Backend: the sandbox runner, the output
// shipper processes and the pool manager over the Nomad API. Building it makes
// no remote call; StartPool waits, with backoff, for the API to answer. Every
// call sends the token as it is then.
type nomadBackend struct {
	*sandbox.Runner
	cfg      *Config
	client   *api.Client
	token    *nomadapi.Token
	logger   hclog.Logger
	onChange func()
	observer pool.Observer // nil: none

	mu        sync.Mutex
	mgr       *pool.Manager
	stopped   bool          // Stop ran: a Manager started after it is stopped at once
	ready     chan struct{} // closed once mgr is first set, or on Stop
	readyOnce sync.Once
}

var _ Backend = (*nomadBackend)(nil)

// newNomadBackend is the BackendFactory of production.
func newNomadBackend(cfg *Config, token *nomadapi.Token, logger hclog.Logger, onChange func(), metrics Metrics) (Backend, error) {
	apiCfg := cfg.API
	apiCfg.Token = "" // not baked into the client: each call reads token
	// The execs' websockets need the API client's own transport, not a
	// metered one: the Runner tells of its execs itself.
	apiCfg.Calls = nil
	execClient, err := nomadapi.NewClient(apiCfg)
	if err != nil {
		return nil, fmt.Errorf("nomad api client: %w", err)
	}
	if metrics != nil {
		apiCfg.Calls = metrics
	}
	client, err := nomadapi.NewClient(apiCfg)
	if err != nil {
		return nil, fmt.Errorf("nomad api client: %w", err)
	}
	b := &nomadBackend{cfg: cfg, client: client, token: token, logger: logger, onChange: onChange, ready: make(chan struct{})}
	b.Runner = &sandbox.Runner{Client: execClient, Token: token, Logger: logger.Named("sandbox"), OnSessionLost: b.unprepare}
	if metrics != nil {
		b.observer = metrics
		b.Runner.OnCall = func(op string, took time.Duration, err error) { metrics.APICall(op, nomadapi.CallResult(err), took) }
	}
	return b, nil
}

// manager is the running pool manager, or nil.
func (b *nomadBackend) manager() *pool.Manager {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.mgr
}

// unprepare sends back to the pool an allocation whose launch session was lost.
func (b *nomadBackend) unprepare(allocID string) {
	if m := b.manager(); m != nil {
		m.Unprepare(allocID)
	}
}

// Ship runs the output shipper as a process that outlives the plugin.
func (b *nomadBackend) Ship(ctx context.Context, job shipper.Job) (sandbox.ExitStatus, error) {
	return shipper.Run(ctx, job)
}

// AllocDone reads the pool's inventory, not a query per task (see
// pool.AllocDone); a recovered task waits here until the pools run.
func (b *nomadBackend) AllocDone(ctx context.Context, _, allocID string) (string, error) {
	select {
	case <-b.ready:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	m := b.manager()
	if m == nil {
		return "", fmt.Errorf("watch allocation %s: %w", allocID, pool.ErrStopped)
	}
	return m.AllocDone(ctx, allocID)
}

// Usage reads the task's resource usage from the allocation's stats.
func (b *nomadBackend) Usage(ctx context.Context, ns, allocID, task string) (*plugin.TaskResourceUsage, error) {
	return usage(ctx, b.client, b.token, ns, allocID, task)
}

// Check asks the local agent about itself.
func (b *nomadBackend) Check(ctx context.Context) error {
	if _, err := agentSelf(ctx, b.client, b.token); err != nil {
		return fmt.Errorf("nomad api at %s: %w", b.client.Address(), err)
	}
	return nil
}

// StartPool waits for the local agent and starts the pool manager. A warm
// allocation is warm only once its launch session is open (Prime); a lost
// session sends it back.
func (b *nomadBackend) StartPool(ctx context.Context) (Pool, error) {
	nodeID, root, err := localNode(ctx, b.client, b.token, b.logger)
	if err != nil {
		return nil, err
	}
	m, err := pool.New(pool.Options{
		Client: b.client, Token: b.token, NodeID: nodeID, Namespace: b.cfg.Namespace, Pools: b.cfg.Pools,
		Logger: b.logger.Named("pool"), OnChange: b.onChange, Observer: b.observer,
		// A claim's record is written behind it (driver/claim.go): a
		// sandbox handed out is in use, whatever the records say.
		WriteBehind: true,
		// A retired sandbox's launch session closes at once: sessions are
		// bounded (MaxSessions), and those of a burst's surplus, retired
		// together, held the bound until Nomad had stopped each sandbox.
		Discard: b.Discard,
		Prepare: func(ctx context.Context, w pool.WarmAlloc) error {
			ref := sandbox.Ref{Namespace: b.cfg.Namespace, AllocID: w.AllocID, Task: w.TaskName,
				HostAllocDir: filepath.Join(root, w.AllocID)}
			if err := handOutCheck(ref); err != nil {
				return err
			}
			err := b.PrimeReady(ctx, ref, w.ReadyCommand)
			if errors.Is(err, sandbox.ErrSessionRefused) {
				return fmt.Errorf("%w: %w", pool.ErrUnpreparable, err)
			}
			return err
		},
		// The ready command runs through the launch session Prepare
		// opened: no exec per check.
		CheckReady: func(ctx context.Context, w pool.WarmAlloc) (pool.ReadyResult, error) {
			res, err := b.CheckReady(ctx, w.AllocID)
			return pool.ReadyResult{Code: res.Code, Output: res.Output}, err
		},
	})
	if err != nil {
		return nil, err
	}
	if err := m.Start(ctx); err != nil {
		m.Stop()
		return nil, err
	}
	b.mu.Lock()
	if b.stopped { // Stop ran while this Manager started: it must not live on
		b.mu.Unlock()
		m.Stop()
		return nil, fmt.Errorf("start pools: %w", pool.ErrStopped)
	}
	b.mgr = m
	b.mu.Unlock()
	b.readyOnce.Do(func() { close(b.ready) })
	return m, nil
}

// Stop stops the pool manager and closes the launch sessions.
func (b *nomadBackend) Stop() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stopped = true
	if b.mgr != nil {
		b.mgr.Stop()
		b.mgr = nil
	}
	b.readyOnce.Do(func() { close(b.ready) }) // a waiting AllocDone says ErrStopped
	b.Runner.Close()
}

// localNode asks the local agent for its node id and its allocation dir,
// retrying until it answers.
func localNode(ctx context.Context, c *api.Client, token *nomadapi.Token, logger hclog.Logger) (string, string, error) {
	backoff := localNodeRetryFirst
	for {
		self, err := agentSelf(ctx, c, token)
		if err == nil {
			if id := self.Stats["client"]["node_id"]; id != "" {
				return id, allocRootOf(self), nil
			}
			err = errors.New("the agent at this address runs no client: point address at the local agent")
		}
		logger.Warn("nomad api not ready; retrying", "address", c.Address(), "error", err, "in", backoff)
		select {
		case <-ctx.Done():
			return "", "", fmt.Errorf("nomad api at %s: %w", c.Address(), err)
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, localNodeRetryMax)
	}
}

// allocRootOf is the client's allocation dir: client.alloc_dir, else <data_dir>/alloc.
func allocRootOf(self *api.AgentSelf) string {
	if c, ok := self.Config["Client"].(map[string]any); ok {
		if d, ok := c["AllocDir"].(string); ok && d != "" {
			return d
		}
	}
	d, _ := self.Config["DataDir"].(string)
	return filepath.Join(d, "alloc")
}

func agentSelf(ctx context.Context, c *api.Client, token *nomadapi.Token) (*api.AgentSelf, error) {
	ctx, cancel := context.WithTimeout(ctx, apiCallTimeout)
	defer cancel()
	var self api.AgentSelf
	q := (&api.QueryOptions{AuthToken: token.Secret()}).WithContext(ctx)
	if _, err := c.Raw().Query("/v1/agent/self", &self, q); err != nil {
		if ue := (api.UnexpectedResponseError{}); errors.As(err, &ue) && ue.StatusCode() == 403 {
			// The token itself never appears: only what it lacks.
			return nil, fmt.Errorf("read /v1/agent/self: %w: permission denied: the plugin's ACL token needs agent read (see example/acl.hcl), or it is missing or unknown: set token_file", err)
		}
		return nil, fmt.Errorf("read /v1/agent/self: %w", err)
	}
	return &self, nil
}

func usage(ctx context.Context, c *api.Client, token *nomadapi.Token, ns, allocID, task string) (*plugin.TaskResourceUsage, error) {
	q := (&api.QueryOptions{Namespace: ns, AuthToken: token.Secret()}).WithContext(ctx)
	a := &api.Allocation{ID: allocID, Namespace: ns}
	ru, err := c.Allocations().Stats(a, q)
	if err != nil {
		return nil, err
	}
	tu, ok := ru.Tasks[task]
	if !ok || tu.ResourceUsage == nil {
		return nil, nil
	}
	out := &plugin.TaskResourceUsage{Timestamp: time.Unix(0, tu.Timestamp)}
	if cs := tu.ResourceUsage.CpuStats; cs != nil {
		out.CPU = &plugin.CPUUsage{SystemMode: cs.SystemMode, UserMode: cs.UserMode, TotalTicks: cs.TotalTicks, Percent: cs.Percent, Measured: cs.Measured}
	}
	if ms := tu.ResourceUsage.MemoryStats; ms != nil {
		out.Memory = &plugin.MemoryUsage{RSS: ms.RSS, Cache: ms.Cache, MaxUsage: ms.MaxUsage, Usage: ms.Usage, Swap: ms.Swap, Measured: ms.Measured}
	}
	return out, nil
}
