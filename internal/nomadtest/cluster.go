package nomadtest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"
)

// ClusterOptions shape a cluster of one server and some clients.
type ClusterOptions struct {
	// Clients is how many client agents join the server.
	Clients int
	// Client holds the options of every client (PluginDir, PluginConfig,
	// ExtraConfig); Persistent and ACL are ignored.
	Client Options
	// StartTimeout bounds each agent's start (default 90s).
	StartTimeout time.Duration
	// PerClient, when set, adjusts client i's options (a pool broken on
	// one node only, for instance).
	PerClient func(i int, o *Options)
}

// Cluster is one server and its clients, each its own agent process with
// its own data dir, ports and TMPDIR, on loopback.
type Cluster struct {
	Server  *Agent
	Clients []*Agent
}

// StartCluster starts a server, then the clients at once, and waits until
// every client's node is ready. It skips the test when no nomad binary
// exists; everything stops when the test ends.
func StartCluster(t testing.TB, opts ClusterOptions) *Cluster {
	t.Helper()
	c := &Cluster{Server: Start(t, Options{role: roleServer, name: "server", StartTimeout: opts.StartTimeout})}
	c.Clients = make([]*Agent, opts.Clients)
	var wg sync.WaitGroup
	errs := make([]error, opts.Clients)
	for i := range opts.Clients {
		o := opts.Client
		o.role, o.servers, o.name = roleClient, []string{c.Server.RPCAddr}, fmt.Sprintf("client-%d", i)
		o.Persistent, o.ACL, o.StartTimeout = false, false, opts.StartTimeout
		if opts.PerClient != nil {
			opts.PerClient(i, &o)
		}
		wg.Go(func() { c.Clients[i], errs[i] = start(t, o) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return c
}

// Client returns the client agent whose node is nodeID, or nil.
func (c *Cluster) Client(nodeID string) *Agent {
	for _, a := range c.Clients {
		if a.NodeID == nodeID {
			return a
		}
	}
	return nil
}

// ready reports whether the agent is ready: a server has a leader; a
// client's own node (the agent's, not the first listed) is ready; a dev
// or one-node agent has its node ready. It sets NodeID.
func (a *Agent) ready(ctx context.Context) (bool, error) {
	q := (&api.QueryOptions{}).WithContext(ctx)
	switch a.opts.role {
	case roleServer:
		leader, err := a.Client.Status().Leader()
		return err == nil && leader != "", err
	case roleClient:
		if a.NodeID == "" {
			self, err := a.Client.Agent().Self()
			if err != nil {
				return false, err
			}
			if a.NodeID = self.Stats["client"]["node_id"]; a.NodeID == "" {
				return false, errors.New("agent reports no node id yet")
			}
		}
		n, _, err := a.Client.Nodes().Info(a.NodeID, q)
		return err == nil && n.Status == "ready", err
	}
	nodes, _, err := a.Client.Nodes().List(q)
	if err == nil && len(nodes) > 0 && nodes[0].Status == "ready" {
		a.NodeID = nodes[0].ID
		return true, nil
	}
	return false, err
}

// serverOnly is the config of a server-only agent, after the part every
// agent has.
const serverOnly = `server {
  enabled          = true
  bootstrap_expect = 1
}
`
