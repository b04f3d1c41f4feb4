// Package driver is the agentkernel-pool task driver: it claims a warm allocation
// from the node's pool for every task and runs the task inside it through the
// Nomad API. It talks to the pool only through the small Pool interface.
package driver

import (
	"github.com/agentkernel/agentkernel-pool/hclspec"
	"github.com/agentkernel/agentkernel-pool/internal/nodeattr"
	"github.com/agentkernel/agentkernel-pool/internal/nomadapi"
	"github.com/agentkernel/agentkernel-pool/plugin"
	"github.com/agentkernel/agentkernel-pool/pool"
)

// The plugin's identity and the plugin block's defaults. A default that a
// pool.Manager applies too has its home in package pool (pool/config.go;
// readiness's in pool/ready.go): the driver's name for it refers there.
const (
	// Name is the driver name, the binary name and the plugin block label;
	// its node attributes are named after it (package nodeattr).
	Name = nodeattr.Driver
	// Version is the plugin's semantic version.
	Version = "0.1.0"

	// DefaultNamespace is where warm jobs live unless the plugin block says otherwise.
	DefaultNamespace = pool.DefaultNamespace
	// DefaultPoolSize is the warm target of a pool without `size`.
	DefaultPoolSize = 1
	// DefaultClaimTimeout is how long a start waits for a warm allocation without `claim_timeout`.
	DefaultClaimTimeout = pool.DefaultClaimTimeout
	// maxPerSize sets a pool's default `max` to this many times its size.
	maxPerSize = 4
	// minDefaultMax is the smallest default `max`, so a size-1 pool can still absorb a burst.
	minDefaultMax = 4
)

// PluginInfo implements plugin.Driver.
func (d *Driver) PluginInfo() plugin.Info { return plugin.Info{Name: Name, Version: Version} }

// ConfigSchema implements plugin.Driver.
func (d *Driver) ConfigSchema() *hclspec.Spec { return configSpec }

// TaskConfigSchema implements plugin.Driver.
func (d *Driver) TaskConfigSchema() *hclspec.Spec { return taskSpec }

// Capabilities implements plugin.Driver. IMAGE isolation: the sandbox brings its
// own filesystem, so the client must not build a chroot (the slow path we avoid).
func (d *Driver) Capabilities() plugin.Capabilities {
	return plugin.Capabilities{
		SendSignals:  true,
		Exec:         true,
		FSIsolation:  plugin.FSIsolationImage,
		NetworkModes: []plugin.NetworkMode{plugin.NetworkModeHost},
		NoMounts:     true,
	}
}

// configSpec is the plugin block's schema. Numbers and durations are strings (HCL
// converts a number to a string) so that a wrong value such as size = "three" reaches
// our validation (driver unhealthy, field named) instead of failing Nomad's schema
// check, which would stop the whole agent. They cannot be `any`: Nomad's HCL decoder
// panics on `any` inside a block map, killing the agent.
// The connection attributes (address, token_file, TLS) are the device
// plugin's too: nomadapi.BlockSpec adds them.
var configSpec = hclspec.NewObject(nomadapi.BlockSpec(map[string]*hclspec.Spec{
	"namespace":       hclspec.NewAttr("namespace", "string", false),
	"metrics_address": hclspec.NewAttr("metrics_address", "string", false),
	"pool": hclspec.NewBlockMap("pool", []string{"name"}, hclspec.NewObject(map[string]*hclspec.Spec{
		"jobspec":          hclspec.NewAttr("jobspec", "string", false),
		"size":             hclspec.NewAttr("size", "string", false),
		"max":              hclspec.NewAttr("max", "string", false),
		"claim_timeout":    hclspec.NewAttr("claim_timeout", "string", false),
		"namespaces":       hclspec.NewAttr("namespaces", "list(string)", false),
		"max_warm":         hclspec.NewAttr("max_warm", "string", false),
		"scale_down_after": hclspec.NewAttr("scale_down_after", "string", false),
		"ready_timeout":    hclspec.NewAttr("ready_timeout", "string", false),
		"device":           hclspec.NewAttr("device", "string", false),
	})),
}))

// rawConfig is the plugin block as Nomad encodes it.
type rawConfig struct {
	nomadapi.Block                    // address, token_file and TLS, decoded from the block's top level
	Namespace      string             `codec:"namespace"`
	MetricsAddr    string             `codec:"metrics_address"`
	Pools          map[string]rawPool `codec:"pool"`
}

type rawPool struct {
	Jobspec      string   `codec:"jobspec"`
	Size         string   `codec:"size"`
	Max          string   `codec:"max"`
	ClaimTimeout string   `codec:"claim_timeout"`
	Namespaces   []string `codec:"namespaces"`
	MaxWarm      string   `codec:"max_warm"`
	ScaleDown    string   `codec:"scale_down_after"`
	ReadyTimeout string   `codec:"ready_timeout"`
	Device       string   `codec:"device"`
}

// Config is the validated plugin configuration.
type Config struct {
	API       nomadapi.Config
	Namespace string
	Pools     []pool.Config // sorted by name
	// Namespaces lists, per pool, the Nomad namespaces whose tasks may use
	// it; a pool without an entry serves every namespace.
	Namespaces map[string][]string
	// Devices holds the pools with `device = true`: device groups of the
	// device plugin (driver/device.go).
	Devices map[string]bool
	// MetricsAddress is where /metrics is served (host:port); "" is off.
	MetricsAddress string
}

// taskSpec is the task config schema: a task names a pool, never an allocation.
var taskSpec = hclspec.NewObject(map[string]*hclspec.Spec{
	"pool":    hclspec.NewAttr("pool", "string", true),
	"command": hclspec.NewAttr("command", "string", false),
	"args":    hclspec.NewAttr("args", "list(string)", false),
})

// TaskConfig is a task's config block.
type TaskConfig struct {
	Pool    string   `codec:"pool"`
	Command string   `codec:"command"`
	Args    []string `codec:"args"`
}
