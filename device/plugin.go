package device

import (
	"context"
	"errors"
	"fmt"
	"net/url"
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

// configSpec is the plugin block's schema: how to reach the local agent. Its
// pools come from the driver (the state file), so there is nothing else.
var configSpec = hclspec.NewObject(map[string]*hclspec.Spec{
	"address":         hclspec.NewAttr("address", "string", false),
	"token_file":      hclspec.NewAttr("token_file", "string", false),
	"ca_file":         hclspec.NewAttr("ca_file", "string", false),
	"cert_file":       hclspec.NewAttr("cert_file", "string", false),
	"key_file":        hclspec.NewAttr("key_file", "string", false),
	"tls_server_name": hclspec.NewAttr("tls_server_name", "string", false),
})

type rawConfig struct {
	Address       string `codec:"address"`
	TokenFile     string `codec:"token_file"`
	CAFile        string `codec:"ca_file"`
	CertFile      string `codec:"cert_file"`
	KeyFile       string `codec:"key_file"`
	TLSServerName string `codec:"tls_server_name"`
}

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

// parseConfig validates the block; each problem names its field.
func parseConfig(b []byte) (*nomadapi.Config, error) {
	var raw rawConfig
	if err := plugin.DecodeConfig(b, &raw); err != nil {
		return nil, err
	}
	var errs []error
	c := &nomadapi.Config{Address: strings.TrimSpace(raw.Address), CAFile: raw.CAFile, CertFile: raw.CertFile,
		KeyFile: raw.KeyFile, TLSServerName: raw.TLSServerName}
	if c.Address != "" {
		if u, err := url.Parse(c.Address); err != nil || u.Scheme == "" || u.Host == "" {
			errs = append(errs, fmt.Errorf("address %q: want a URL such as http://127.0.0.1:4646", c.Address))
		}
	}
	if raw.TokenFile != "" {
		tok, err := nomadapi.ReadTokenFile(raw.TokenFile)
		if err != nil {
			errs = append(errs, fmt.Errorf("token_file: %w", err))
		}
		c.Token = tok
	}
	if (raw.CertFile == "") != (raw.KeyFile == "") {
		errs = append(errs, errors.New("cert_file and key_file: set both or neither"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return c, nil
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
