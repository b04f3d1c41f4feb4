package plugin

import (
	"github.com/hashicorp/go-hclog"
	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/agentkernel/agentkernel-pool/plugin/proto/base"
	"github.com/agentkernel/agentkernel-pool/plugin/proto/device"
)

// ServeDevice serves d to the Nomad client that launched this process as a
// device plugin and returns when the client is done with it. A nil logger
// means NewLogger("plugin").
func ServeDevice(d Device, logger hclog.Logger) {
	goplugin.Serve(ServeDeviceConfig(d, logger))
}

// ServeDeviceConfig is the go-plugin configuration ServeDevice uses; tests set
// its Test field to serve in-process.
func ServeDeviceConfig(d Device, logger hclog.Logger) *goplugin.ServeConfig {
	if logger == nil {
		logger = NewLogger("plugin")
	}
	return &goplugin.ServeConfig{
		HandshakeConfig: Handshake,
		Plugins: goplugin.PluginSet{
			PluginNameBase: &grpcPlugin{register: func(s *grpc.Server) {
				base.RegisterBasePluginServer(s, &baseServer{d: d, typ: base.PluginType_DEVICE, api: DeviceAPIVersion, logger: logger})
			}},
			PluginNameDevice: &grpcPlugin{register: func(s *grpc.Server) { device.RegisterDevicePluginServer(s, &deviceServer{d: d, logger: logger}) }},
		},
		GRPCServer: newGRPCServer(logger),
		Logger:     logger,
	}
}
