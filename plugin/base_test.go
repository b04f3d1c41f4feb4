package plugin_test

import (
	"bytes"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/agentkernel/agentkernel-pool/plugin/plugintest"
	"github.com/agentkernel/agentkernel-pool/plugin/proto/base"
	"github.com/agentkernel/agentkernel-pool/plugin/proto/drivers"
)

func TestPluginInfo(t *testing.T) {
	_, c, ctx := setup(t)
	info, err := c.Base.PluginInfo(ctx, &base.PluginInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	want := &base.PluginInfoResponse{Type: base.PluginType_DRIVER, PluginApiVersions: []string{"v0.1.0"}, PluginVersion: "0.1.0", Name: "fake"}
	if !proto.Equal(info, want) {
		t.Fatalf("plugin info = %v, want %v", info, want)
	}
}

func TestConfigSchema(t *testing.T) {
	d, c, ctx := setup(t)
	resp, err := c.Base.ConfigSchema(ctx, &base.ConfigSchemaRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(resp.GetSpec(), d.configSchema) {
		t.Fatalf("spec = %v, want %v", resp.GetSpec(), d.configSchema)
	}
}

func TestConfigSchemaNilMeansNoConfig(t *testing.T) {
	d := newFakeDriver()
	d.configSchema = nil
	c := plugintest.Serve(t, d)
	resp, err := c.Base.ConfigSchema(t.Context(), &base.ConfigSchemaRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Spec != nil {
		t.Fatalf("spec = %v, want unset", resp.Spec)
	}
}

func TestSetConfigLongLivedInstance(t *testing.T) {
	d, c, ctx := setup(t)
	cfg := plugintest.Msgpack(t, map[string]any{"size": "3"})
	if err := c.Configure(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	var calls []setConfigCall
	d.locked(func() { calls = d.setConfigs })
	if len(calls) != 1 {
		t.Fatalf("SetConfig called %d times, want 1", len(calls))
	}
	got := calls[0]
	if !bytes.Equal(got.data, cfg) {
		t.Fatalf("config bytes = %x, want %x", got.data, cfg)
	}
	if got.agent == nil || got.agent.ClientMinPort != plugintest.DefaultClientMinPort || got.agent.ClientMaxPort != plugintest.DefaultClientMaxPort {
		t.Fatalf("agent config = %+v", got.agent)
	}
}

func TestSetConfigValidationInstance(t *testing.T) {
	d, c, ctx := setup(t)
	if err := c.ValidateConfig(ctx, nil); err != nil {
		t.Fatal(err)
	}
	var calls []setConfigCall
	d.locked(func() { calls = d.setConfigs })
	if len(calls) != 2 {
		t.Fatalf("SetConfig called %d times, want 2", len(calls))
	}
	for i, call := range calls {
		if call.agent != nil {
			t.Fatalf("call %d: agent config = %+v, want nil during validation", i, call.agent)
		}
	}
}

func TestSetConfigError(t *testing.T) {
	_, c, ctx := setup(t)
	err := c.ValidateConfig(ctx, plugintest.Msgpack(t, map[string]any{"size": "-1"}))
	assertAppError(t, err, `size must be a whole number, not negative, got "-1"`)

	err = c.ValidateConfig(ctx, plugintest.Msgpack(t, map[string]any{"size": 3}))
	assertAppError(t, err, "size: cannot decode number 3 as string")
}

func TestInitAndShutdown(t *testing.T) {
	_, c, ctx := setup(t)
	if _, err := c.Driver.Init(ctx, &drivers.InitRequest{}); err != nil {
		t.Fatalf("init: %v", err)
	}
	if _, err := c.Driver.Shutdown(ctx, &drivers.ShutdownRequest{}); err != nil {
		t.Fatalf("shutdown: %v", err)
	}

	failing := newFakeDriver()
	failing.locked(func() { failing.panicIn = "Init" }) // the fake's Init fails instead of panicking
	c2 := plugintest.Serve(t, failing)
	_, err := c2.Driver.Init(ctx, &drivers.InitRequest{})
	assertAppError(t, err, "init failed")
}

func TestInitAndShutdownOptional(t *testing.T) {
	c := plugintest.Serve(t, plainDriver{newFakeDriver()})
	if _, err := c.Driver.Init(t.Context(), &drivers.InitRequest{}); err != nil {
		t.Fatalf("init without Initializer: %v", err)
	}
	if _, err := c.Driver.Shutdown(t.Context(), &drivers.ShutdownRequest{}); err != nil {
		t.Fatalf("shutdown without Shutdowner: %v", err)
	}
}

func TestPanicIsAnErrorNotACrash(t *testing.T) {
	d, c, ctx := setup(t)
	d.locked(func() { d.panicIn = "PluginInfo" })
	_, err := c.Base.PluginInfo(ctx, &base.PluginInfoRequest{})
	if status.Code(err) != codes.Internal || !strings.Contains(err.Error(), "boom in PluginInfo") {
		t.Fatalf("err = %v, want Internal naming the panic", err)
	}
	d.locked(func() { d.panicIn = "" })
	if _, err := c.Base.PluginInfo(ctx, &base.PluginInfoRequest{}); err != nil {
		t.Fatalf("plugin unusable after a panic: %v", err)
	}
}

// assertAppError checks that err carries msg and a code the client does not
// mistake for a dead plugin.
func assertAppError(t *testing.T, err error, msg string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one containing %q", msg)
	}
	if !strings.Contains(err.Error(), msg) {
		t.Fatalf("error %q does not contain %q", err, msg)
	}
	if code := status.Code(err); code == codes.Unavailable || code == codes.Canceled {
		t.Fatalf("application error has code %v, which the client reads as plugin death", code)
	}
}
