package driver

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agentkernel/agentkernel-pool/device"
	"github.com/agentkernel/agentkernel-pool/plugin/proto/base"
	"github.com/agentkernel/agentkernel-pool/plugin/proto/drivers"
	"github.com/agentkernel/agentkernel-pool/pool"
)

const (
	warmA = "0000000a-0000-4000-8000-000000000000"
	warmB = "0000000b-0000-4000-8000-000000000000"
)

// configureDevice configures devPool with device = true, the API at a fake agent whose
// data dir is dataDir.
func (e *env) configureDevice(dataDir string) {
	e.t.Helper()
	agent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{
			"config": map[string]any{"DataDir": dataDir},
			"stats":  map[string]any{"client": map[string]string{"node_id": "node1-0000-4000-8000-000000000000"}},
		})
	}))
	e.t.Cleanup(agent.Close)
	e.pool.warm = []pool.WarmAlloc{{Pool: "dev", AllocID: warmA, JobID: "w/dispatch-a", TaskName: "sandbox"},
		{Pool: "dev", AllocID: warmB, JobID: "w/dispatch-b", TaskName: "sandbox"}}
	pools := e.devPool()
	pools["dev"].(map[string]any)["device"] = "true"
	cfg := map[string]any{"address": agent.URL, "ca_file": nil, "cert_file": nil, "key_file": nil,
		"namespace": nil, "tls_server_name": nil, "token_file": nil, "pool": pools}
	if _, err := e.c.Base.SetConfig(context.Background(), configRequest(encode(e.t, cfg))); err != nil {
		e.t.Fatal(err)
	}
	e.waitHealth(drivers.FingerprintResponse_HEALTHY)
}

// A task the scheduler gave warm sandbox B claims B, not the oldest (A);
// one given a sandbox that is gone claims another and says so.
func TestStartTaskClaimsTheReservedSandbox(t *testing.T) {
	e := newEnv(t)
	e.configureDevice(t.TempDir())
	tc := e.taskConfig("agent", map[string]any{"pool": "dev", "command": "x"}, nil)
	tc.DeviceEnv = map[string]string{device.EnvSandbox: warmB}
	if got := e.state(e.start(tc)).Claim.AllocID; got != warmB {
		t.Fatalf("claimed %s, want the reserved %s", got, warmB)
	}

	evctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events, err := e.drv.TaskEvents(evctx)
	if err != nil {
		t.Fatal(err)
	}
	tc2 := e.taskConfig("agent2", map[string]any{"pool": "dev", "command": "x"}, nil)
	tc2.Id = strings.Replace(tc2.Id, "/agent2/", "/agent2b/", 1)
	tc2.DeviceEnv = map[string]string{device.EnvSandbox: warmB}
	if got := e.state(e.start(tc2)).Claim.AllocID; got == warmB {
		t.Fatalf("sandbox %s handed out twice", warmB)
	}
	deadline := time.After(5 * time.Second)
	for {
		select {
		case ev := <-events:
			if strings.Contains(ev.Message, "the scheduler reserved is no longer warm") {
				return
			}
		case <-deadline:
			t.Fatal("no event saying the reserved sandbox was gone")
		}
	}
}

// Device requests the driver cannot honour are refused before any claim.
func TestReservedSandboxMistakes(t *testing.T) {
	e := newEnv(t)
	e.configureDevice(t.TempDir())
	for env, want := range map[string]string{
		warmA + "," + warmB: "count must be 1",
		"cold.other.0":      `device instance cold.other.0 is pool "other"'s, but the task's config names pool "dev"`,
	} {
		tc := e.taskConfig("agent", map[string]any{"pool": "dev", "command": "x"}, nil)
		tc.DeviceEnv = map[string]string{device.EnvSandbox: env}
		_, err := e.c.Driver.StartTask(context.Background(), &drivers.StartTaskRequest{Task: tc})
		if err == nil || recoverable(err) || !strings.Contains(err.Error(), want) {
			t.Errorf("device env %s: got %v, want a non-recoverable error with %q", env, err, want)
		}
	}
	if n := len(e.pool.claimIDs()); n != 0 {
		t.Errorf("%d sandboxes claimed for tasks that cannot run", n)
	}
}

// The state the device plugin advertises: the warm sandboxes, and cold
// slots for the rest of max (8) less what is claimed; a cold slot a running
// task holds stays listed beside the free ones.
func TestDeviceStatePublished(t *testing.T) {
	e := newEnv(t)
	dataDir := t.TempDir()
	e.configureDevice(dataDir)
	dir := device.StateDir(dataDir)
	read := func(want func(device.PoolState) bool) device.PoolState {
		t.Helper()
		var last device.State
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			st, err := device.ReadState(dir)
			if err == nil && len(st.Pools) == 1 {
				last = st
				if want(st.Pools[0]) {
					return st.Pools[0]
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("device state never as wanted; last %+v", last)
		return device.PoolState{}
	}
	ps := read(func(ps device.PoolState) bool { return len(ps.Cold) == 6 })
	if !slices.Equal(ps.Warm, []string{warmA, warmB}) || ps.Cold[0] != "cold.dev.0" || ps.Cold[5] != "cold.dev.5" {
		t.Fatalf("state %+v: want warm A and B, cold slots 0 to 5", ps)
	}

	tc := e.taskConfig("agent", map[string]any{"pool": "dev", "command": "x"}, nil)
	tc.DeviceEnv = map[string]string{device.EnvSandbox: "cold.dev.3"}
	e.start(tc)
	e.drv.health.poke() // the fake pool tells no change
	ps = read(func(ps device.PoolState) bool { return len(ps.Cold) == 6 && ps.Cold[0] == "cold.dev.3" })
	// 8 - 2 warm - 1 claimed = 5 free, and the held one.
	if want := []string{"cold.dev.3", "cold.dev.0", "cold.dev.1", "cold.dev.2", "cold.dev.4", "cold.dev.5"}; !slices.Equal(ps.Cold, want) {
		t.Fatalf("cold slots %v, want %v", ps.Cold, want)
	}
}

func TestDeviceOptionValidated(t *testing.T) {
	e := newEnv(t)
	pools := e.devPool()
	pools["dev"].(map[string]any)["device"] = "maybe"
	if _, err := e.c.Base.SetConfig(context.Background(), configRequest(e.pluginConfig(pools))); err != nil {
		t.Fatal(err)
	}
	fp := e.waitHealth(drivers.FingerprintResponse_UNHEALTHY)
	if want := `pool "dev": device: "maybe": want true or false`; !strings.Contains(fp.HealthDescription, want) {
		t.Fatalf("health %q lacks %q", fp.HealthDescription, want)
	}
}

// configRequest is SetConfig as the long-lived instance sends it.
func configRequest(msgpackConfig []byte) *base.SetConfigRequest {
	return &base.SetConfigRequest{MsgpackConfig: msgpackConfig, PluginApiVersion: "v0.1.0",
		NomadConfig: &base.NomadConfig{Driver: &base.NomadDriverConfig{ClientMinPort: 14000, ClientMaxPort: 14512}}}
}
