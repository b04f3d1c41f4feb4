package device

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-pool/internal/nomadapi"
	"github.com/agentkernel/agentkernel-pool/plugin"
)

const (
	// apiTimeout bounds each call to the local agent.
	apiTimeout = 10 * time.Second
	// locateBackoffMax caps the pause between two attempts to reach the agent.
	locateBackoffMax = 15 * time.Second
	// rereadEvery re-reads the state file without an event, in case one was
	// missed (or inotify is not available).
	rereadEvery = 5 * time.Second
	// settle gathers the events of one write into one read.
	settle = 20 * time.Millisecond
)

// Fingerprint implements plugin.Device. The first set goes at once: at start
// the Nomad agent waits for every plugin's first fingerprint before it serves
// its HTTP API, which the plugin needs to find its node. It is the state the
// memo points to (the node this agent had before it restarted), else empty.
// Then every change of the driver's state file is sent as it happens.
func (p *Plugin) Fingerprint(ctx context.Context) (<-chan []plugin.DeviceGroup, error) {
	ch := make(chan []plugin.DeviceGroup, 1)
	ch <- p.remembered()
	go func() {
		defer close(ch)
		p.follow(ctx, ch)
	}()
	return ch, nil
}

// remembered is the state of the node the memo names for the configured
// agent, or an empty set. The allocations a restarted client starts before
// the plugin found its agent reserve these: sent empty, the client would fail
// each of them for good ("unknown device").
func (p *Plugin) remembered() []plugin.DeviceGroup {
	cfg, _ := p.config()
	if cfg == nil {
		return []plugin.DeviceGroup{}
	}
	loc, ok := loadLocation(p.memoDir, cfg.EffectiveAddress())
	if !ok {
		return []plugin.DeviceGroup{}
	}
	groups, err := p.read(StateDir(loc.DataDir), loc.NodeID)
	if err != nil {
		p.logger.Warn("cannot read the remembered node's device state; sending none until the agent answers", "error", err)
		return []plugin.DeviceGroup{}
	}
	p.logger.Info("sent the warm sandboxes of the node this agent had", "node_id", loc.NodeID, "groups", len(groups))
	return groups
}

// follow waits for a usable config, finds the node's state dir and sends the
// state's groups on every change until ctx ends.
func (p *Plugin) follow(ctx context.Context, ch chan<- []plugin.DeviceGroup) {
	var cfg *nomadapi.Config
	for cfg == nil {
		var changed <-chan struct{}
		if cfg, changed = p.config(); cfg != nil {
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
	nodeID, dataDir, err := p.locate(ctx, *cfg)
	if err != nil {
		return // ctx ended
	}
	p.remember(cfg.EffectiveAddress(), location{NodeID: nodeID, DataDir: dataDir})
	dir := StateDir(dataDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		p.logger.Error("cannot make the device state dir; re-reading it every few seconds", "dir", dir, "error", err)
	}
	events, stop := watchDir(dir)
	if events == nil {
		p.logger.Warn("cannot watch the device state dir; re-reading it every few seconds", "dir", dir)
	}
	defer stop()
	t := time.NewTicker(rereadEvery)
	defer t.Stop()
	p.logger.Info("following the driver's warm sandboxes", "node_id", nodeID, "state_dir", dir)

	lastErr := ""
	for {
		// Unchanged sets are sent too: the server drops them (plugin
		// package), and Nomad never sees them.
		if groups, err := p.read(dir, nodeID); err != nil {
			if err.Error() != lastErr {
				p.logger.Error("device state unreadable; keeping the devices sent before", "error", err)
			}
			lastErr = err.Error()
		} else {
			lastErr = ""
			select {
			case ch <- groups:
			case <-ctx.Done():
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-events:
			// More events of the same write follow at once: take them together.
			drainFor(events, settle)
		case <-t.C:
		}
	}
}

// read turns the state file into device groups; a state another node wrote
// (a data dir copied between machines) counts as none.
func (p *Plugin) read(dir, nodeID string) ([]plugin.DeviceGroup, error) {
	st, err := ReadState(dir)
	if err != nil {
		return nil, err
	}
	if st.NodeID != "" && st.NodeID != nodeID {
		return nil, fmt.Errorf("device state in %s is node %s's, not this node's (%s)", dir, st.NodeID, nodeID)
	}
	g := Groups(st)
	if g == nil {
		g = []plugin.DeviceGroup{}
	}
	return g, nil
}

// locate asks the local agent for its node ID and data dir until it
// answers (it does not serve its API until the plugins fingerprinted).
func (p *Plugin) locate(ctx context.Context, cfg nomadapi.Config) (nodeID, dataDir string, err error) {
	backoff := 500 * time.Millisecond
	for {
		var client *api.Client
		if client, err = nomadapi.NewClient(cfg); err == nil {
			if nodeID, dataDir, err = agentSelf(ctx, client, p.tokenSet); err == nil {
				return nodeID, dataDir, nil
			}
		}
		p.logger.Debug("local agent not answering yet; retrying", "error", err, "in", backoff.String())
		select {
		case <-ctx.Done():
			return "", "", ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, locateBackoffMax)
	}
}

func agentSelf(ctx context.Context, c *api.Client, token *nomadapi.Token) (nodeID, dataDir string, err error) {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	var self api.AgentSelf
	q := (&api.QueryOptions{AuthToken: token.Secret()}).WithContext(ctx)
	if _, err := c.Raw().Query("/v1/agent/self", &self, q); err != nil {
		return "", "", fmt.Errorf("read /v1/agent/self: %w", err)
	}
	nodeID = self.Stats["client"]["node_id"]
	dataDir, _ = self.Config["DataDir"].(string)
	switch {
	case nodeID == "":
		return "", "", errors.New("the agent at this address runs no client: point address at the local agent")
	case !filepath.IsAbs(dataDir):
		return "", "", fmt.Errorf("the local agent's data dir %q is not an absolute path", dataDir)
	}
	return nodeID, dataDir, nil
}

// watchDir returns a channel that receives when something in dir changes,
// or nil when dir cannot be watched, and a func that stops the watch.
func watchDir(dir string) (<-chan struct{}, func()) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, func() {}
	}
	if err := w.Add(dir); err != nil {
		w.Close()
		return nil, func() {}
	}
	out := make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case _, ok := <-w.Events:
				if !ok {
					return
				}
			case _, ok := <-w.Errors:
				if !ok {
					return
				}
			}
			select {
			case out <- struct{}{}:
			default:
			}
		}
	}()
	return out, func() { w.Close(); <-done }
}

// drainFor takes what ch receives within d.
func drainFor(ch <-chan struct{}, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-ch:
		case <-t.C:
			return
		}
	}
}
