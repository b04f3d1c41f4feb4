package plugin_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/agentkernel/agentkernel-pool/hclspec"
	"github.com/agentkernel/agentkernel-pool/plugin"
	"github.com/agentkernel/agentkernel-pool/plugin/plugintest"
	"github.com/agentkernel/agentkernel-pool/plugin/proto/base"
	"github.com/agentkernel/agentkernel-pool/plugin/proto/device"
)

// fakeDevice sends what the test puts on sets and reserves by echoing ids.
type fakeDevice struct {
	sets    chan []plugin.DeviceGroup
	reserve func([]string) (*plugin.Reservation, error)
}

func newFakeDevice() *fakeDevice {
	return &fakeDevice{sets: make(chan []plugin.DeviceGroup, 8), reserve: func(ids []string) (*plugin.Reservation, error) {
		return &plugin.Reservation{Env: map[string]string{"FAKE_DEVICE": strings.Join(ids, ",")}}, nil
	}}
}

func (f *fakeDevice) PluginInfo() plugin.Info {
	return plugin.Info{Name: "fake-device", Version: "0.2.0"}
}
func (f *fakeDevice) ConfigSchema() *hclspec.Spec {
	return hclspec.NewObject(map[string]*hclspec.Spec{"address": hclspec.NewAttr("address", "string", false)})
}
func (f *fakeDevice) SetConfig(context.Context, []byte, *plugin.AgentConfig) error { return nil }
func (f *fakeDevice) Fingerprint(ctx context.Context) (<-chan []plugin.DeviceGroup, error) {
	out := make(chan []plugin.DeviceGroup)
	go func() {
		defer close(out)
		for {
			select {
			case <-ctx.Done():
				return
			case s, ok := <-f.sets:
				if !ok {
					return
				}
				select {
				case out <- s:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out, nil
}
func (f *fakeDevice) Reserve(_ context.Context, ids []string) (*plugin.Reservation, error) {
	return f.reserve(ids)
}

func group(name string, ids ...string) plugin.DeviceGroup {
	g := plugin.DeviceGroup{Vendor: "acme", Type: "sandbox", Name: name, Attributes: map[string]any{"pool": name, "warm": true}}
	for _, id := range ids {
		g.Instances = append(g.Instances, plugin.DeviceInstance{ID: id, Healthy: true})
	}
	return g
}

func TestDevicePluginInfo(t *testing.T) {
	c := plugintest.ServeDevice(t, newFakeDevice())
	info, err := c.Base.PluginInfo(t.Context(), &base.PluginInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	want := &base.PluginInfoResponse{Type: base.PluginType_DEVICE, PluginApiVersions: []string{"v0.1.0"}, PluginVersion: "0.2.0", Name: "fake-device"}
	if !proto.Equal(info, want) {
		t.Fatalf("plugin info = %v, want %v", info, want)
	}
}

// The Nomad client drops a device plugin for good when its stream carries a
// set it refuses or ends: the server sends valid sets only, never the same
// set twice in a row, and holds the stream open when the plugin's channel
// closes.
func TestDeviceFingerprintSendsValidChanges(t *testing.T) {
	d := newFakeDevice()
	c := plugintest.ServeDevice(t, d)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	s, err := c.Device.Fingerprint(ctx, &device.FingerprintRequest{})
	if err != nil {
		t.Fatal(err)
	}
	d.sets <- []plugin.DeviceGroup{}
	d.sets <- []plugin.DeviceGroup{group("py", "a1")}
	d.sets <- []plugin.DeviceGroup{group("py", "a1")}                                                      // the same again
	d.sets <- []plugin.DeviceGroup{{Vendor: "acme/x", Type: "sandbox", Name: "py"}}                        // '/' in vendor
	d.sets <- []plugin.DeviceGroup{group("py", "a1"), group("go", "a1")}                                   // id twice
	d.sets <- []plugin.DeviceGroup{group("py", "a1", "a2"), {Vendor: "acme", Type: "sandbox", Name: "go"}} // a change
	close(d.sets)

	var got []*device.FingerprintResponse
	for range 3 {
		r, err := s.Recv()
		if err != nil {
			t.Fatalf("recv after %d sets: %v", len(got), err)
		}
		got = append(got, r)
	}
	if len(got[0].GetDeviceGroup()) != 0 {
		t.Errorf("first set %v, want empty", got[0])
	}
	g := got[1].GetDeviceGroup()
	if len(g) != 1 || g[0].GetVendor() != "acme" || g[0].GetDeviceType() != "sandbox" || g[0].GetDeviceName() != "py" ||
		len(g[0].GetDevices()) != 1 || g[0].GetDevices()[0].GetId() != "a1" || !g[0].GetDevices()[0].GetHealthy() ||
		g[0].GetAttributes()["pool"].GetStringVal() != "py" || !g[0].GetAttributes()["warm"].GetBoolVal() {
		t.Errorf("second set %v", got[1])
	}
	if g := got[2].GetDeviceGroup(); len(g) != 2 || len(g[0].GetDevices()) != 2 || len(g[1].GetDevices()) != 0 {
		t.Errorf("third set %v, want py with a1 and a2, and go empty", got[2])
	}
	// Held open: no fourth message, no end, until the client goes.
	rctx, rcancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer rcancel()
	s2, err := c.Device.Fingerprint(rctx, &device.FingerprintRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := s2.Recv(); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("a stream whose channel closed gave %v, %v; want it held open until the client's deadline", r, err)
	}
}

// Reserve always answers with a container reservation (the client
// dereferences it), and refuses a call without ids.
func TestDeviceReserve(t *testing.T) {
	d := newFakeDevice()
	c := plugintest.ServeDevice(t, d)
	r, err := c.Device.Reserve(t.Context(), &device.ReserveRequest{DeviceIds: []string{"a1"}})
	if err != nil || r.GetContainerRes().GetEnvs()["FAKE_DEVICE"] != "a1" {
		t.Fatalf("reserve: %v, %v", r, err)
	}
	d.reserve = func([]string) (*plugin.Reservation, error) { return nil, nil }
	r, err = c.Device.Reserve(t.Context(), &device.ReserveRequest{DeviceIds: []string{"a1"}})
	if err != nil || r.GetContainerRes() == nil {
		t.Fatalf("reserve with nothing to give: %v, %v; want an empty container reservation", r, err)
	}
	if _, err := c.Device.Reserve(t.Context(), &device.ReserveRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("reserve without ids: %v, want InvalidArgument", err)
	}
}

// Stats has nothing to send and holds its stream open: an ended stream
// would stop the client's statistics for good and log errors.
func TestDeviceStatsHeldOpen(t *testing.T) {
	c := plugintest.ServeDevice(t, newFakeDevice())
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	s, err := c.Device.Stats(ctx, &device.StatsRequest{CollectionInterval: durationpb.New(10 * time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := s.Recv(); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("stats gave %v, %v; want nothing until the client's deadline", r, err)
	}
}

func TestValidateDeviceGroups(t *testing.T) {
	ok := []plugin.DeviceGroup{group("py", "a1"), group("go", "a2"), {Vendor: "acme", Type: "sandbox", Name: "empty"}}
	if err := plugin.ValidateDeviceGroups(ok); err != nil {
		t.Fatalf("valid set refused: %v", err)
	}
	for name, bad := range map[string][]plugin.DeviceGroup{
		"no vendor":    {{Type: "sandbox", Name: "py"}},
		"no name":      {{Vendor: "acme", Type: "sandbox"}},
		"slash type":   {{Vendor: "acme", Type: "a/b", Name: "py"}},
		"group twice":  {group("py"), group("py")},
		"empty id":     {group("py", "")},
		"id twice":     {group("py", "a1", "a1")},
		"unnamed attr": {{Vendor: "acme", Type: "sandbox", Name: "py", Attributes: map[string]any{"": 1}}},
	} {
		if err := plugin.ValidateDeviceGroups(bad); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// The binary serves both device services over a real handshake.
func TestLaunchedBinaryServesDeviceServices(t *testing.T) {
	t.Setenv(serveEnv, "device")
	c := plugintest.LaunchDevice(t, os.Args[0])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	info, err := c.Base.PluginInfo(ctx, &base.PluginInfoRequest{})
	if err != nil || info.GetType() != base.PluginType_DEVICE {
		t.Fatalf("plugin info = %v, %v", info, err)
	}
	r, err := c.Device.Reserve(ctx, &device.ReserveRequest{DeviceIds: []string{"x"}})
	if err != nil || r.GetContainerRes().GetEnvs()["FAKE_DEVICE"] != "x" {
		t.Fatalf("reserve = %v, %v", r, err)
	}
}
