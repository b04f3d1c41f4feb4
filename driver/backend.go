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
	"github.com/agentkernel/agentkernel-pool/plugin"
	"github.com/agentkernel/agentkernel-pool/pool"
)

// nomadBackend is the production backend: the sandbox runner and the pool manager
// over the Nomad API. Building it makes no remote call; StartPool waits, with
// backoff, for the API to answer. Every call sends token as it is then.
func nomadBackend(cfg *Config, token *pool.Token, logger hclog.Logger, onChange func()) (*Backend, error) {
	apiCfg := cfg.API
	apiCfg.Token = "" // not baked into the client: each call reads token
	client, err := pool.NewClient(apiCfg)
	if err != nil {
		return nil, fmt.Errorf("nomad api client: %w", err)
	}
	var (
		mu        sync.Mutex
		mgr       *pool.Manager
		stopped   bool                  // Stop ran: a Manager started after it is stopped at once
		ready     = make(chan struct{}) // closed once mgr is first set
		readyOnce sync.Once
	)
	runner := &sandbox.Runner{Client: client, Token: token, Logger: logger.Named("sandbox")}
	runner.OnSessionLost = func(allocID string) {
		mu.Lock()
		m := mgr
		mu.Unlock()
		if m != nil {
			m.Unprepare(allocID)
		}
	}
	return &Backend{
		Runner: runner,
		Ship:   processShipper{runner: runner}.ship,
		// From the pool's inventory, not a query per task (see pool.AllocDone);
		// a recovered task waits here until the pools run.
		AllocDone: func(ctx context.Context, _, allocID string) (string, error) {
			select {
			case <-ready:
			case <-ctx.Done():
				return "", ctx.Err()
			}
			mu.Lock()
			m := mgr
			mu.Unlock()
			if m == nil {
				return "", fmt.Errorf("watch allocation %s: %w", allocID, pool.ErrStopped)
			}
			return m.AllocDone(ctx, allocID)
		},
		Usage: func(ctx context.Context, ns, allocID, task string) (*plugin.TaskResourceUsage, error) {
			return usage(ctx, client, token, ns, allocID, task)
		},
		Check: func(ctx context.Context) error {
			if _, err := agentSelf(ctx, client, token); err != nil {
				return fmt.Errorf("nomad api at %s: %w", client.Address(), err)
			}
			return nil
		},
		StartPool: func(ctx context.Context) (Pool, error) {
			nodeID, root, err := localNode(ctx, client, token, logger)
			if err != nil {
				return nil, err
			}
			// A warm allocation is warm only once its launch session is
			// open (sandbox.Runner.Prime); a lost session sends it back.
			m, err := pool.New(pool.Options{
				Client: client, Token: token, NodeID: nodeID, Namespace: cfg.Namespace, Pools: cfg.Pools,
				Logger: logger.Named("pool"), OnChange: onChange, Observer: cfg.observer,
				Prepare: func(ctx context.Context, w pool.WarmAlloc) error {
					err := runner.Prime(ctx, sandbox.Ref{Namespace: cfg.Namespace, AllocID: w.AllocID, Task: w.TaskName,
						HostAllocDir: filepath.Join(root, w.AllocID)})
					if errors.Is(err, sandbox.ErrSessionRefused) {
						return fmt.Errorf("%w: %w", pool.ErrUnpreparable, err)
					}
					return err
				},
			})
			if err != nil {
				return nil, err
			}
			if err := m.Start(ctx); err != nil {
				m.Stop()
				return nil, err
			}
			mu.Lock()
			if stopped { // Stop ran while this Manager started: it must not live on
				mu.Unlock()
				m.Stop()
				return nil, fmt.Errorf("start pools: %w", pool.ErrStopped)
			}
			mgr = m
			mu.Unlock()
			readyOnce.Do(func() { close(ready) })
			return m, nil
		},
		Stop: func() {
			mu.Lock()
			defer mu.Unlock()
			stopped = true
			if mgr != nil {
				mgr.Stop()
				mgr = nil
			}
			readyOnce.Do(func() { close(ready) }) // a waiting AllocDone says ErrStopped
			runner.Close()
		},
	}, nil
}

// localNode asks the local agent for its node id and its allocation dir,
// retrying until it answers.
func localNode(ctx context.Context, c *api.Client, token *pool.Token, logger hclog.Logger) (string, string, error) {
	backoff := 500 * time.Millisecond
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
		backoff = min(backoff*2, 15*time.Second)
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

func agentSelf(ctx context.Context, c *api.Client, token *pool.Token) (*api.AgentSelf, error) {
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

func usage(ctx context.Context, c *api.Client, token *pool.Token, ns, allocID, task string) (*plugin.TaskResourceUsage, error) {
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
