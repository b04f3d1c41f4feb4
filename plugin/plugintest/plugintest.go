// Package plugintest serves a plugin.Driver or a plugin.Device (device.go)
// behind a real go-plugin gRPC server, in-process or as a built binary, and
// hands back the gRPC clients the Nomad client would use, so tests drive the
// wire protocol exactly as Nomad does.
package plugintest

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	goplugin "github.com/hashicorp/go-plugin"
	"github.com/hashicorp/go-plugin/runner"
	"google.golang.org/grpc"

	"github.com/agentkernel/agentkernel-pool/plugin"
	"github.com/agentkernel/agentkernel-pool/plugin/proto/base"
	"github.com/agentkernel/agentkernel-pool/plugin/proto/drivers"
)

// startTimeout bounds how long a plugin may take to come up in tests.
const startTimeout = 30 * time.Second

// Client is a connection to a served driver: the two gRPC services Nomad calls.
type Client struct {
	Base   base.BasePluginClient
	Driver drivers.DriverClient

	rpc goplugin.ClientProtocol
}

// Ping checks the connection through go-plugin's health service.
func (c *Client) Ping() error { return c.rpc.Ping() }

// Serve starts d in this process behind go-plugin's gRPC server, configured as
// plugin.Serve configures it, and connects a client. Both stop when the test ends.
func Serve(t testing.TB, d plugin.Driver) *Client {
	t.Helper()
	return serveInProcess(t, "plugin server", plugin.ServeConfig(d, testLogger("plugin")), clientPlugins(), dispense)
}

// Launch starts the plugin binary at path the way the Nomad client does (magic
// cookie, PLUGIN_PROTOCOL_VERSIONS=2, PLUGIN_MIN_PORT/MAX_PORT, gRPC only) and
// connects a client. The process is killed when the test ends.
func Launch(t testing.TB, path string, args ...string) *Client {
	t.Helper()
	return launch(t, clientPlugins(), dispense, path, args)
}

// serveInProcess serves cfg in this process, connects a client with the
// client-side plugins and hands its connection to dispense. what names the
// server in failures. Both stop when the test ends.
func serveInProcess[C any](t testing.TB, what string, cfg *goplugin.ServeConfig, plugins goplugin.PluginSet, dispense func(goplugin.ClientProtocol) (C, error)) C {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	reattachCh := make(chan *goplugin.ReattachConfig, 1)
	closed := make(chan struct{})

	cfg.Test = &goplugin.ServeTestConfig{Context: ctx, ReattachConfigCh: reattachCh, CloseCh: closed}
	go goplugin.Serve(cfg)

	var rc *goplugin.ReattachConfig
	select {
	case rc = <-reattachCh:
	case <-closed:
		cancel()
		t.Fatalf("plugintest: %s stopped before it was ready", what)
	case <-time.After(startTimeout):
		cancel()
		t.Fatalf("plugintest: %s did not start", what)
	}
	// The plugin is this process: waiting means waiting for the server to stop.
	rc.ReattachFunc = func() (runner.AttachedRunner, error) { return inProcess{closed: closed}, nil }

	pc := goplugin.NewClient(&goplugin.ClientConfig{
		HandshakeConfig:  plugin.Handshake,
		Plugins:          plugins,
		Reattach:         rc,
		AllowedProtocols: []goplugin.Protocol{goplugin.ProtocolGRPC},
		Logger:           testLogger("client"),
	})
	rpc, err := pc.Client()
	var c C
	if err == nil {
		c, err = dispense(rpc)
	}
	if err != nil {
		cancel()
		<-closed
		t.Fatalf("plugintest: connect: %v", err)
	}
	t.Cleanup(func() {
		// Close asks the server to stop (go-plugin's controller). Cancelling as
		// well would make go-plugin stop the server twice, racing with itself,
		// so the context is only the fallback.
		_ = rpc.Close()
		select {
		case <-closed:
		case <-time.After(5 * time.Second):
		}
		cancel()
		<-closed
	})
	return c
}

// launch starts the binary at path as the Nomad client starts a plugin,
// connects a client with the client-side plugins and hands its connection to
// dispense. The process is killed when the test ends.
func launch[C any](t testing.TB, plugins goplugin.PluginSet, dispense func(goplugin.ClientProtocol) (C, error), path string, args []string) C {
	t.Helper()
	pc := goplugin.NewClient(&goplugin.ClientConfig{
		HandshakeConfig:  plugin.Handshake,
		Plugins:          plugins,
		Cmd:              exec.Command(path, args...),
		AllowedProtocols: []goplugin.Protocol{goplugin.ProtocolGRPC},
		StartTimeout:     startTimeout,
		Logger:           testLogger("client"),
	})
	t.Cleanup(pc.Kill)
	rpc, err := pc.Client()
	var c C
	if err == nil {
		c, err = dispense(rpc)
	}
	if err != nil {
		t.Fatalf("plugintest: launch %s: %v", path, err)
	}
	return c
}

// HandshakeEnv is the environment the Nomad client adds when it launches a plugin.
func HandshakeEnv() []string {
	return []string{
		plugin.Handshake.MagicCookieKey + "=" + plugin.Handshake.MagicCookieValue,
		"PLUGIN_MIN_PORT=10000",
		"PLUGIN_MAX_PORT=25000",
		"PLUGIN_PROTOCOL_VERSIONS=2",
	}
}

// ReadHandshake launches the binary with Nomad's environment, returns the first
// line it prints on stdout (without the newline) and kills it.
func ReadHandshake(ctx context.Context, path string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	// The plugin is killed once it has answered, so its socket is never
	// removed by its owner: it goes with a temporary dir of its own.
	tmp, err := os.MkdirTemp("", "plugintest-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = append(os.Environ(), append(HandshakeEnv(), "TMPDIR="+tmp)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", err
	}
	if err := cmd.Start(); err != nil {
		return "", err
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	var line []byte
	buf := make([]byte, 1)
	for {
		if _, err := out.Read(buf); err != nil {
			if errors.Is(err, io.EOF) {
				return string(line), errors.New("plugin closed stdout before a full handshake line")
			}
			return string(line), err
		}
		if buf[0] == '\n' {
			return string(line), nil
		}
		line = append(line, buf[0])
	}
}

func dispense(rpc goplugin.ClientProtocol) (*Client, error) {
	b, d, err := dispenseBoth(rpc, plugin.PluginNameDriver)
	if err != nil {
		return nil, err
	}
	return &Client{Base: b, Driver: d.(drivers.DriverClient), rpc: rpc}, nil
}

// dispenseBoth dispenses BasePlugin and the plugin's own service, name.
func dispenseBoth(rpc goplugin.ClientProtocol, name string) (base.BasePluginClient, any, error) {
	b, err := rpc.Dispense(plugin.PluginNameBase)
	if err != nil {
		return nil, nil, err
	}
	own, err := rpc.Dispense(name)
	if err != nil {
		return nil, nil, err
	}
	return b.(base.BasePluginClient), own, nil
}

// clientPlugins is the client half of the plugin set: go-plugin's gRPC Dispense
// is local, so these only wrap the shared connection in our generated stubs.
func clientPlugins() goplugin.PluginSet {
	return goplugin.PluginSet{
		plugin.PluginNameBase:   &stub{newClient: func(c *grpc.ClientConn) any { return base.NewBasePluginClient(c) }},
		plugin.PluginNameDriver: &stub{newClient: func(c *grpc.ClientConn) any { return drivers.NewDriverClient(c) }},
	}
}

type stub struct {
	goplugin.NetRPCUnsupportedPlugin
	newClient func(*grpc.ClientConn) any
}

func (s *stub) GRPCServer(*goplugin.GRPCBroker, *grpc.Server) error {
	return errors.New("plugintest: client-side plugin only")
}

func (s *stub) GRPCClient(_ context.Context, _ *goplugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return s.newClient(c), nil
}

// inProcess stands in for a plugin process that is really this test binary.
type inProcess struct{ closed <-chan struct{} }

func (p inProcess) Wait(ctx context.Context) error {
	select {
	case <-p.closed:
	case <-ctx.Done():
	}
	return nil
}
func (inProcess) Kill(context.Context) error { return nil }
func (inProcess) ID() string                 { return "in-process" }
func (inProcess) PluginToHost(n, a string) (string, string, error) {
	return n, a, nil
}
func (inProcess) HostToPlugin(n, a string) (string, string, error) {
	return n, a, nil
}

// testLogger shows plugin and go-plugin logs only under go test -v.
func testLogger(name string) hclog.Logger {
	if !testing.Verbose() {
		return hclog.NewNullLogger()
	}
	return hclog.New(&hclog.LoggerOptions{Name: name, Level: hclog.Debug, Output: os.Stderr})
}
