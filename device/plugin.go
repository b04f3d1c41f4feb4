package device

import (
	"context"
	"strings"
	"sync"

	"github.com/hashicorp/go-hclog"

	"github.com/agentkernel/agentkernel-pool/hclspec"
	"github.com/agentkernel/agentkernel-pool/internal/nomadapi"
	"github.com/agentkernel/agentkernel-pool/plugin"
)

// Name is the device plugin's name: the file name in plugin_dir (a symlink to
// the driver's binary) and its plugin block's label.
const Name = "agentkernel-pool-device"

// Arg is the argument that makes the binary serve the device plugin
// (`args = ["device"]` in its plugin block).
const Arg = "device"

// configSpec is the plugin block's schema: how to reach the local agent, the
// driver's connection attributes (nomadapi.BlockSpec). Its pools come from
// the driver (the state file), so there is nothing else.
var configSpec = hclspec.NewObject(nomadapi.BlockSpec(nil))

// Plugin implements plugin.Device.
type Plugin struct {
	logger  hclog.Logger
	version string

	mu       sync.Mutex
	raw      []byte
	api      *nomadapi.Config // nil until a usable config arrived
	cfgErr   error
	tokenSet *nomadapi.Token
	gotCfg   chan struct{} // closed and replaced whenever the config changes
	memoDir  string        // DefaultMemoDir but in tests
}

// New returns the device plugin; version is the binary's.
func New(logger hclog.Logger, version string) *Plugin {
	return &Plugin{logger: logger.Named("device"), version: version, tokenSet: nomadapi.NewToken(""), gotCfg: make(chan struct{}), memoDir: DefaultMemoDir}
}

var _ plugin.Device = (*Plugin)(nil)

// PluginInfo implements plugin.Device.
func (p *Plugin) PluginInfo() plugin.Info { return plugin.Info{Name: Name, Version: p.version} }

// ConfigSchema implements plugin.Device.
func (p *Plugin) ConfigSchema() *hclspec.Spec { return configSpec }

// SetConfig implements plugin.Device. A bad block never fails it (that would
// stop the agent): the plugin logs the problems and reports no devices.
func (p *Plugin) SetConfig(_ context.Context, msgpackConfig []byte, agent *plugin.AgentConfig) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if (p.api != nil || p.cfgErr != nil) && string(msgpackConfig) == string(p.raw) {
		return nil // Nomad sends the same config more than once
	}
	p.raw = append([]byte(nil), msgpackConfig...)
	api, err := parseConfig(msgpackConfig)
	p.api, p.cfgErr = api, err
	if err != nil {
		p.logger.Error("invalid plugin config; no sandbox devices until it is fixed", "error", err, "validation_only", agent == nil)
	} else {
		p.tokenSet.Set(api.Token)
	}
	close(p.gotCfg)
	p.gotCfg = make(chan struct{})
	return nil
}

// parseConfig validates the block as the driver does its connection
// attributes (nomadapi.Block.Config); each problem names its field.
func parseConfig(b []byte) (*nomadapi.Config, error) {
	var raw nomadapi.Block
	if err := plugin.DecodeConfig(b, &raw); err != nil {
		return nil, err
	}
	c, err := raw.Config()
	if err != nil {
		return nil, err
	}
	return &c, nil
}

// config returns the usable config, or nil, and a channel closed when it changes.
func (p *Plugin) config() (*nomadapi.Config, <-chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.api, p.gotCfg
}

// Reserve implements plugin.Device: the task learns its instance from
// EnvSandbox. It is a pure function of ids: Nomad may call it first in a
// relaunched process, and never says when a reservation ends.
func (p *Plugin) Reserve(_ context.Context, ids []string) (*plugin.Reservation, error) {
	return &plugin.Reservation{Env: map[string]string{EnvSandbox: strings.Join(ids, ",")}}, nil
}
