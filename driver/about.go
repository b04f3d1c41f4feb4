// Package driver is the agentkernel-pool task driver: it claims a warm allocation
// from the node's pool for every task and runs the task inside it through the
// Nomad API. It talks to the pool only through the small Pool interface.
package driver

import "time"

// The single source of truth for the plugin's identity and defaults.
const (
	// Name is the driver name, the binary name and the plugin block label.
	Name = "agentkernel-pool"
	// Version is the plugin's semantic version.
	Version = "0.1.0"

	// DefaultNamespace is where warm jobs live unless the plugin block says otherwise.
	DefaultNamespace = "default"
	// DefaultPoolSize is the warm target of a pool without `size`.
	DefaultPoolSize = 1
	// DefaultClaimTimeout is how long a start waits for a warm allocation without `claim_timeout`.
	DefaultClaimTimeout = 30 * time.Second
	// maxPerSize sets a pool's default `max` to this many times its size.
	maxPerSize = 4
	// minDefaultMax is the smallest default `max`, so a size-1 pool can still absorb a burst.
	minDefaultMax = 4

	// attrPrefix prefixes every node attribute the driver publishes.
	attrPrefix = "driver." + Name
)
