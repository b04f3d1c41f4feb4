package plugin

import (
	"context"

	"github.com/hashicorp/go-hclog"

	"github.com/agentkernel/agentkernel-pool/hclspec"
	"github.com/agentkernel/agentkernel-pool/plugin/proto/base"
)

// configurable is what BasePlugin needs of a driver or a device plugin.
type configurable interface {
	PluginInfo() Info
	ConfigSchema() *hclspec.Spec
	SetConfig(ctx context.Context, msgpackConfig []byte, agent *AgentConfig) error
}

// baseServer serves hashicorp.nomad.plugins.base.proto.BasePlugin for a
// plugin of type typ speaking API version api.
type baseServer struct {
	base.UnimplementedBasePluginServer
	d      configurable
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
