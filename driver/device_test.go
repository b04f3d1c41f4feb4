package driver

import (
	"context"
	"encoding/json"
	"fmt"
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

// The state the device plugin advertises: the warm sandboxes, and the cold
// slots 0 to max-1 (8), healthy for max less what is warm and claimed; a
// cold slot a running task holds is never a free one, and a warm sandbox
// no longer warm stays listed as taken (a task placed on it may be on its
// way).
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
			e.drv.health.poke() // the fake pool tells no change
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("device state never as wanted; last %+v", last)
		return device.PoolState{}
	}
	cold := func(ns ...int) []string {
		var out []string
		for _, n := range ns {
			out = append(out, device.ColdID("dev", n))
		}
		return out
	}
	ps := read(func(ps device.PoolState) bool { return len(ps.Cold) == 6 })
	if !slices.Equal(ps.Warm, []string{warmA, warmB}) || !slices.Equal(ps.Cold, cold(0, 1, 2, 3, 4, 5)) || !slices.Equal(ps.Taken, cold(6, 7)) {
		t.Fatalf("state %+v: want warm A and B, cold slots 0 to 5 free, 6 and 7 taken", ps)
	}

	tc := e.taskConfig("agent", map[string]any{"pool": "dev", "command": "x"}, nil)
	tc.DeviceEnv = map[string]string{device.EnvSandbox: "cold.dev.3"}
	e.start(tc)
	// 8 - 2 warm - 1 claimed = 5 free, not the held one.
	ps = read(func(ps device.PoolState) bool { return len(ps.Cold) == 5 })
	if !slices.Equal(ps.Cold, cold(0, 1, 2, 4, 5)) || !slices.Equal(ps.Taken, cold(3, 6, 7)) {
		t.Fatalf("cold %v taken %v: want 0 1 2 4 5 free, the held 3 and 6 7 taken", ps.Cold, ps.Taken)
	}

	e.pool.mu.Lock()
	e.pool.warm = e.pool.warm[:1]
	e.pool.mu.Unlock()
	ps = read(func(ps device.PoolState) bool { return len(ps.Warm) == 1 })
	if ps.Warm[0] != warmA || !slices.Contains(ps.Taken, warmB) {
		t.Fatalf("state %+v: want A warm and B taken", ps)
	}
}

// A warm sandbox no longer warm is listed for goneGrace, the newest
// maxGone of a pool at most, and not once it is warm again.
func TestWarmHistory(t *testing.T) {
	var h warmHistory
	t0 := time.Now()
	h.update(t0, map[string][]string{"p": {"a", "b"}})
	if got := h.update(t0.Add(time.Second), map[string][]string{"p": {"b"}}); !slices.Equal(got["p"], []string{"a"}) {
		t.Fatalf("gone after a left: %v", got)
	}
	if got := h.update(t0.Add(2*time.Second), map[string][]string{"p": {"a", "b"}}); len(got["p"]) != 0 {
		t.Fatalf("gone after a came back: %v", got)
	}
	h.update(t0.Add(3*time.Second), map[string][]string{})
	if got := h.update(t0.Add(3*time.Second+goneGrace), nil); len(got["p"]) != 0 {
		t.Fatalf("still gone after the grace: %v", got)
	}
	many := make([]string, maxGone+10)
	for i := range many {
		many[i] = fmt.Sprintf("s%03d", i)
	}
	for i, id := range many { // one leaves per second, oldest first
		h.update(t0.Add(time.Hour+time.Duration(i)*time.Millisecond), map[string][]string{"p": {id}})
	}
	got := h.update(t0.Add(time.Hour+time.Second), nil)["p"]
	if len(got) != maxGone || slices.Contains(got, "s000") || !slices.Contains(got, many[len(many)-1]) {
		t.Fatalf("%d gone kept (want the newest %d): first %v", len(got), maxGone, got[:3])
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
