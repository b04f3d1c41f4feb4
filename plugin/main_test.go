package plugin_test

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/agentkernel/agentkernel-pool/plugin"
	"github.com/agentkernel/agentkernel-pool/plugin/plugintest"
	"github.com/agentkernel/agentkernel-pool/plugin/proto/base"
	"github.com/agentkernel/agentkernel-pool/plugin/proto/drivers"
)

// serveEnv makes the test binary act as a plugin binary serving fakeDriver
// ("1") or fakeDevice ("device"), so the handshake is tested against a real
// process without building another one.
const serveEnv = "AGENTKERNEL_PLUGINTEST_SERVE"

func TestMain(m *testing.M) {
	switch os.Getenv(serveEnv) {
	case "1":
		logger := plugin.NewLogger("fake")
		plugin.Serve(newFakeDriver(), logger)
		os.Exit(0)
	case "device":
		logger := plugin.NewLogger("fake-device")
		plugin.ServeDevice(newFakeDevice(), logger)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// setup serves a fresh fakeDriver in-process.
func setup(t *testing.T) (*fakeDriver, *plugintest.Client, context.Context) {
	t.Helper()
	d := newFakeDriver()
	c := plugintest.Serve(t, d)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return d, c, ctx
}

func TestHandshakeLine(t *testing.T) {
	t.Setenv(serveEnv, "1")
	line, err := plugintest.ReadHandshake(context.Background(), os.Args[0])
	if err != nil {
		t.Fatalf("read handshake: %v (line %q)", err, line)
	}
	// core protocol 1, app protocol 2, unix socket, grpc, no server cert, no 7th field.
	if !regexp.MustCompile(`^1\|2\|unix\|/[^|]+\|grpc\|$`).MatchString(line) {
		t.Fatalf("handshake line %q does not have Nomad's 6-field gRPC format", line)
	}
}

func TestLaunchedBinaryServesBothServices(t *testing.T) {
	t.Setenv(serveEnv, "1")
	c := plugintest.Launch(t, os.Args[0])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if err := c.Ping(); err != nil {
		t.Fatalf("ping: %v", err)
	}
	info, err := c.Base.PluginInfo(ctx, &base.PluginInfoRequest{})
	if err != nil {
		t.Fatalf("plugin info: %v", err)
	}
	if info.GetName() != "fake" || info.GetType() != base.PluginType_DRIVER {
		t.Fatalf("plugin info = %v", info)
	}
	if err := c.Configure(ctx, plugintest.Msgpack(t, map[string]any{"size": "3"})); err != nil {
		t.Fatalf("configure: %v", err)
	}
	caps, err := c.Driver.Capabilities(ctx, &drivers.CapabilitiesRequest{})
	if err != nil {
		t.Fatalf("capabilities: %v", err)
	}
	if !caps.GetCapabilities().GetExec() {
		t.Fatalf("capabilities = %v", caps)
	}
}

func TestBinaryWithoutCookieRefusesToServe(t *testing.T) {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), serveEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("plugin served without the magic cookie; output %q", out)
	}
	if !strings.Contains(string(out), "This binary is a plugin") {
		t.Fatalf("output %q does not explain that the binary is a plugin", out)
	}
}
