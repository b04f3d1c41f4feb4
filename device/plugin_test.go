package device

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/agentkernel/agentkernel-pool/plugin"
	"github.com/agentkernel/agentkernel-pool/plugin/plugintest"
)

// fakeAgent answers /v1/agent/self as a client agent with dataDir does,
// after refusing the first refuse requests (an agent still starting).
func fakeAgent(t *testing.T, dataDir string, refuse int) *httptest.Server {
	t.Helper()
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/agent/self" {
			http.NotFound(w, r)
			return
		}
		if calls.Add(1) <= int32(refuse) {
			http.Error(w, "starting", http.StatusServiceUnavailable)
			return
		}
		json.NewEncoder(w).Encode(map[string]any{
			"config": map[string]any{"DataDir": dataDir},
			"stats":  map[string]any{"client": map[string]string{"node_id": testNode}},
		})
	}))
	t.Cleanup(srv.Close)
	return srv
}

func configure(t *testing.T, p *Plugin, cfg map[string]any) {
	t.Helper()
	b := plugintest.Msgpack(t, cfg)
	if err := p.SetConfig(context.Background(), b, &plugin.AgentConfig{}); err != nil {
		t.Fatalf("set config: %v", err)
	}
}

// The first set goes at once and empty (the agent does not serve its API
// before every plugin's first fingerprint); once the agent answers (here
// after refusing twice), every state the driver writes arrives as the
// device groups, and a state of another node is not sent.
func TestFingerprintFollowsTheDriversState(t *testing.T) {
	dataDir := t.TempDir()
	agent := fakeAgent(t, dataDir, 2)
	p := New(hclog.NewNullLogger(), "0.1.0")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ch, err := p.Fingerprint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if first := next(t, ch); len(first) != 0 {
		t.Fatalf("first set %+v, want an empty one at once", first)
	}
	configure(t, p, map[string]any{"address": agent.URL})

	dir := StateDir(dataDir)
	st := State{NodeID: testNode, Pools: []PoolState{{Name: "py", Warm: []string{"a1"}, Cold: []string{"cold.py.0", "cold.py.1"}}}}
	if err := WriteState(dir, st); err != nil {
		t.Fatal(err)
	}
	waitGroups(t, ch, func(g []plugin.DeviceGroup) bool {
		return len(g) == 2 && len(g[0].Instances) == 1 && len(g[1].Instances) == 2
	})

	st.Pools[0].Warm = []string{"a1", "a2"}
	if err := WriteState(dir, st); err != nil {
		t.Fatal(err)
	}
	waitGroups(t, ch, func(g []plugin.DeviceGroup) bool {
		return len(g) == 2 && slices.Equal(g[0].Instances, []plugin.DeviceInstance{{ID: "a1", Healthy: true}, {ID: "a2", Healthy: true}})
	})

	st.NodeID = "another-node"
	if err := WriteState(dir, st); err != nil {
		t.Fatal(err)
	}
	select {
	case g := <-ch:
		if len(g) != 2 || len(g[0].Instances) != 2 {
			t.Fatalf("sent %+v for another node's state", g)
		}
	case <-time.After(500 * time.Millisecond):
	}
	cancel()
	for range ch { // closed once ctx ends: nothing left running
	}
}

// A bad block never fails SetConfig (the agent would not start); the
// plugin then reports no devices.
func TestBadConfigKeepsTheAgentUp(t *testing.T) {
	p := New(hclog.NewNullLogger(), "0.1.0")
	for _, cfg := range []map[string]any{
		{"address": "not a url"},
		{"token_file": filepath.Join(t.TempDir(), "missing")},
		{"cert_file": "/x"},
	} {
		configure(t, p, cfg)
		if api, _ := p.config(); api != nil {
			t.Fatalf("config %v accepted", cfg)
		}
	}
}

func TestReserveNamesTheInstance(t *testing.T) {
	p := New(hclog.NewNullLogger(), "0.1.0")
	r, err := p.Reserve(context.Background(), []string{"a1"})
	if err != nil || r.Env[EnvSandbox] != "a1" || len(r.Env) != 1 {
		t.Fatalf("reserve: %+v, %v", r, err)
	}
}

func next(t *testing.T, ch <-chan []plugin.DeviceGroup) []plugin.DeviceGroup {
	t.Helper()
	select {
	case g := <-ch:
		return g
	case <-time.After(5 * time.Second):
		t.Fatal("no device set within 5s")
		return nil
	}
}

// waitGroups takes sets from ch until one satisfies ok.
func waitGroups(t *testing.T, ch <-chan []plugin.DeviceGroup, ok func([]plugin.DeviceGroup) bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case g := <-ch:
			if ok(g) {
				return
			}
		case <-deadline:
			t.Fatal("expected device set not sent within 10s")
		}
	}
}
