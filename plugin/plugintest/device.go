package plugintest

import (
	"testing"

	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/agentkernel/agentkernel-pool/plugin"
	"github.com/agentkernel/agentkernel-pool/plugin/proto/base"
	"github.com/agentkernel/agentkernel-pool/plugin/proto/device"
)

// DeviceClient is a connection to a served device plugin: the two gRPC
// services Nomad calls.
type DeviceClient struct {
	Base   base.BasePluginClient
	Device device.DevicePluginClient

	rpc goplugin.ClientProtocol
}

// ServeDevice starts d in this process behind go-plugin's gRPC server, as
// plugin.ServeDevice configures it, and connects a client. Both stop when
// the test ends.
func ServeDevice(t testing.TB, d plugin.Device) *DeviceClient {
	t.Helper()
	return serveInProcess(t, "device plugin server", plugin.ServeDeviceConfig(d, testLogger("plugin")), devicePlugins(), dispenseDevice)
}

// LaunchDevice starts the binary at path as the Nomad client starts a device
// plugin and connects a client. The process is killed when the test ends.
func LaunchDevice(t testing.TB, path string, args ...string) *DeviceClient {
	t.Helper()
	return launch(t, devicePlugins(), dispenseDevice, path, args)
}

func dispenseDevice(rpc goplugin.ClientProtocol) (*DeviceClient, error) {
	b, d, err := dispenseBoth(rpc, plugin.PluginNameDevice)
	if err != nil {
		return nil, err
	}
	return &DeviceClient{Base: b, Device: d.(device.DevicePluginClient), rpc: rpc}, nil
}

func devicePlugins() goplugin.PluginSet {
	return goplugin.PluginSet{
		plugin.PluginNameBase:   &stub{newClient: func(c *grpc.ClientConn) any { return base.NewBasePluginClient(c) }},
		plugin.PluginNameDevice: &stub{newClient: func(c *grpc.ClientConn) any { return device.NewDevicePluginClient(c) }},
	}
}
