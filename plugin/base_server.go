package plugin

import (
	"context"

	"github.com/hashicorp/go-hclog"

	"github.com/agentkernel/agentkernel-pool/hclspec"
	"github.com/agentkernel/agentkernel-pool/plugin/proto/base"
)

// Base is what every plugin implements, driver or device: Nomad's BasePlugin
// service, which baseServer adapts.
type Base interface {
	// PluginInfo names the plugin and its version; it must work before SetConfig.
	PluginInfo() Info
	// ConfigSchema is the plugin block's schema (root must be an Object), or nil for none.
	ConfigSchema() *hclspec.Spec
	// SetConfig receives the plugin block as msgpack (see DecodeConfig). It is called
	// at least twice per process and must be idempotent; agent is nil while Nomad only
	// validates the config. An error here stops the Nomad agent from starting, so
	// semantic problems belong in what the plugin fingerprints instead.
	SetConfig(ctx context.Context, msgpackConfig []byte, agent *AgentConfig) error
}

// baseServer serves hashicorp.nomad.plugins.base.proto.BasePlugin for a
// plugin of type typ speaking API version api.
type baseServer struct {
	base.UnimplementedBasePluginServer
	d      Base
	typ    base.PluginType
	api    string
	logger hclog.Logger
}

func (s *baseServer) PluginInfo(context.Context, *base.PluginInfoRequest) (*base.PluginInfoResponse, error) {
	info := s.d.PluginInfo()
	return &base.PluginInfoResponse{
		Type:              s.typ,
		PluginApiVersions: []string{s.api},
		PluginVersion:     info.Version,
		Name:              info.Name,
	}, nil
}

func (s *baseServer) ConfigSchema(context.Context, *base.ConfigSchemaRequest) (*base.ConfigSchemaResponse, error) {
	spec := s.d.ConfigSchema()
	// A nil spec leaves the field unset, which tells Nomad the plugin takes no config.
	return &base.ConfigSchemaResponse{Spec: spec}, nil
}

func (s *baseServer) SetConfig(ctx context.Context, req *base.SetConfigRequest) (*base.SetConfigResponse, error) {
	if v := req.GetPluginApiVersion(); v != "" && v != s.api {
		// Only warn: failing SetConfig would stop the Nomad agent from starting.
		s.logger.Warn("client negotiated an unexpected plugin API version", "version", v, "supported", s.api)
	}
	agent := agentConfigFromProto(req.GetNomadConfig())
	s.logger.Debug("set config", "bytes", len(req.GetMsgpackConfig()), "validation_only", agent == nil)
	err := s.d.SetConfig(ctx, req.GetMsgpackConfig(), agent)
	if err != nil {
		return nil, toStatus(err)
	}
	return &base.SetConfigResponse{}, nil
}
