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
// its Test field to serve in-process. A nil logger means NewLogger("plugin").
func ServeDeviceConfig(d Device, logger hclog.Logger) *goplugin.ServeConfig {
	return serveConfig(d, base.PluginType_DEVICE, DeviceAPIVersion, PluginNameDevice, logger, func(s *grpc.Server, logger hclog.Logger) {
		device.RegisterDevicePluginServer(s, &deviceServer{d: d, logger: logger})
	})
}
