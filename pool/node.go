package pool

import (
	"context"
	"fmt"

	"github.com/hashicorp/nomad/api"
)

// loadNode reads this node's datacenter, node pool and name, used to fill
// template defaults.
func (m *Manager) loadNode(ctx context.Context) error {
	var node *api.Node
	err := call(ctx, retryAttempts, func(ctx context.Context) error {
		var err error
		node, _, err = m.client.Nodes().Info(m.nodeID, m.queryOpts(ctx, ""))
		return err
	})
	if err != nil {
		return fmt.Errorf("read node %s: %w", m.nodeID, err)
	}
	m.mu.Lock()
	m.node = node
	m.mu.Unlock()
	return nil
}

// nodeLoop reads this node until it can, for a Manager started before its
// node was registered (at agent boot), then completes the templates with
// the node's defaults. The template hash leaves those out, so the warm
// instances already there stay.
func (m *Manager) nodeLoop() {
	for sleepCtx(m.ctx, min(m.reconcileEvery, templateRetry)) {
		ctx, cancel := context.WithTimeout(m.ctx, reconcileTimeout)
		err := m.loadNode(ctx)
		if err == nil {
			m.log.Info("read this node; completing warm templates with its datacenter and node pool", "node_id", m.nodeID)
			for _, name := range m.names {
				_ = m.ensureTemplate(ctx, m.pools[name], false) // logs and records its error
			}
		}
		cancel()
		if err == nil {
			return
		}
		m.log.Debug("cannot read this node yet", "node_id", m.nodeID, "error", err)
	}
}
