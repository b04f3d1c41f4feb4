package plugintest

import (
	"context"
	"os/exec"
	"testing"
	"time"

	goplugin "github.com/hashicorp/go-plugin"
	"github.com/hashicorp/go-plugin/runner"
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
	ctx, cancel := context.WithCancel(context.Background())
	reattachCh := make(chan *goplugin.ReattachConfig, 1)
	closed := make(chan struct{})
	cfg := plugin.ServeDeviceConfig(d, testLogger("plugin"))
	cfg.Test = &goplugin.ServeTestConfig{Context: ctx, ReattachConfigCh: reattachCh, CloseCh: closed}
	go goplugin.Serve(cfg)
	var rc *goplugin.ReattachConfig
	select {
	case rc = <-reattachCh:
	case <-closed:
		cancel()
		t.Fatal("plugintest: device plugin server stopped before it was ready")
	case <-time.After(startTimeout):
		cancel()
		t.Fatal("plugintest: device plugin server did not start")
	}
	rc.ReattachFunc = func() (runner.AttachedRunner, error) { return inProcess{closed: closed}, nil }
	pc := goplugin.NewClient(&goplugin.ClientConfig{
		HandshakeConfig:  plugin.Handshake,
		Plugins:          devicePlugins(),
		Reattach:         rc,
		AllowedProtocols: []goplugin.Protocol{goplugin.ProtocolGRPC},
		Logger:           testLogger("client"),
	})
	c, err := dispenseDevice(pc)
	if err != nil {
		cancel()
		<-closed
		t.Fatalf("plugintest: connect: %v", err)
	}
	t.Cleanup(func() {
		_ = c.rpc.Close() // as Serve's cleanup: close first, cancel as the fallback
		select {
		case <-closed:
		case <-time.After(5 * time.Second):
		}
		cancel()
		<-closed
	})
	return c
}

// LaunchDevice starts the binary at path as the Nomad client starts a device
// plugin and connects a client. The process is killed when the test ends.
func LaunchDevice(t testing.TB, path string, args ...string) *DeviceClient {
	t.Helper()
	pc := goplugin.NewClient(&goplugin.ClientConfig{
		HandshakeConfig:  plugin.Handshake,
		Plugins:          devicePlugins(),
		Cmd:              exec.Command(path, args...),
		AllowedProtocols: []goplugin.Protocol{goplugin.ProtocolGRPC},
		StartTimeout:     startTimeout,
		Logger:           testLogger("client"),
	})
	t.Cleanup(pc.Kill)
	c, err := dispenseDevice(pc)
	if err != nil {
		t.Fatalf("plugintest: launch %s: %v", path, err)
	}
	return c
}

func dispenseDevice(pc *goplugin.Client) (*DeviceClient, error) {
	rpc, err := pc.Client()
	if err != nil {
		return nil, err
	}
	b, err := rpc.Dispense(plugin.PluginNameBase)
	if err != nil {
		return nil, err
	}
	d, err := rpc.Dispense(plugin.PluginNameDevice)
	if err != nil {
		return nil, err
	}
	return &DeviceClient{Base: b.(base.BasePluginClient), Device: d.(device.DevicePluginClient), rpc: rpc}, nil
}

func devicePlugins() goplugin.PluginSet {
	return goplugin.PluginSet{
		plugin.PluginNameBase:   &stub{newClient: func(c *grpc.ClientConn) any { return base.NewBasePluginClient(c) }},
		plugin.PluginNameDevice: &stub{newClient: func(c *grpc.ClientConn) any { return device.NewDevicePluginClient(c) }},
	}
}
