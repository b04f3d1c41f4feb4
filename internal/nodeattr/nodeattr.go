// Package nodeattr names the node attributes the plugin publishes: the
// driver's fingerprint writes them, the status command and the tests read
// them, all through this one table. The names are a contract with operators
// (constraints, `nomad node status -verbose`): renaming one breaks their jobs.
package nodeattr

import "strings"

// Driver is the task driver's name: Nomad keys a node's drivers by it
// (api.Node.Drivers) and prefixes the driver's attributes with it.
const Driver = "agentkernel-pool"

// prefix starts every attribute the driver publishes; poolPrefix every
// attribute of one of its pools.
const (
	prefix     = "driver." + Driver + "."
	poolPrefix = prefix + "pool."
)

// Version is the attribute holding the plugin's version.
const Version = prefix + "version"

// Field is one attribute a pool publishes (Pool names it).
type Field string

// A pool's attributes: its counts (pool.Stats) and why it fails.
const (
	Size    Field = "size"
	Target  Field = "target"
	Max     Field = "max"
	Warm    Field = "warm"
	Claimed Field = "claimed"
	// Preparing is how many of the pool's running sandboxes have not
	// passed their readiness check yet (Nomad's lists show them running).
	Preparing     Field = "preparing"
	PrimeFailures Field = "prime_failures"
	// Error is why the pool fails, empty while it works: published even
	// when empty, since Nomad keeps an attribute a fingerprint leaves out at
	// its last value.
	Error Field = "error"
)

// Pool is the attribute of field f of the named pool.
func Pool(pool string, f Field) string {
	return poolPrefix + pool + "." + string(f)
}

// ParsePool says which pool and field attr is the attribute of; ok is false
// when it is no pool attribute of this driver.
func ParsePool(attr string) (pool string, f Field, ok bool) {
	rest, ours := strings.CutPrefix(attr, poolPrefix)
	i := strings.LastIndexByte(rest, '.')
	if !ours || i <= 0 {
		return "", "", false
	}
	return rest[:i], Field(rest[i+1:]), true
}
