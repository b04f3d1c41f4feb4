package device

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
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

// newPlugin is a device plugin whose memo lives in the test's own dir.
func newPlugin(t *testing.T) *Plugin {
	p := New(hclog.NewNullLogger(), "0.1.0")
	p.memoDir = t.TempDir()
	return p
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
	p := newPlugin(t)
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

// After an agent restart the device plugin is a new process, configured
// before its first fingerprint, and the agent does not answer until that
// fingerprint is in. The allocations the client restarts at once reserve the
// warm sandboxes they were placed on: the first set already holds the node's
// state, as the plugin last found it for this agent, and only that node's.
func TestFirstFingerprintAfterRestartHasTheNodesSandboxes(t *testing.T) {
	dataDir, memo := t.TempDir(), t.TempDir()
	st := State{NodeID: testNode, Pools: []PoolState{{Name: "py", Warm: []string{"a1", "a2"}, Cold: []string{"cold.py.0"}}}}
	if err := WriteState(StateDir(dataDir), st); err != nil {
		t.Fatal(err)
	}
	agent := fakeAgent(t, dataDir, 0)
	start := func(address string) (<-chan []plugin.DeviceGroup, context.CancelFunc) {
		p := newPlugin(t)
		p.memoDir = memo
		configure(t, p, map[string]any{"address": address})
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		ch, err := p.Fingerprint(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return ch, func() {
			cancel()
			for range ch {
			}
		}
	}

	// Never run before: nothing to go by until the agent answers.
	ch, stop := start(agent.URL)
	if first := next(t, ch); len(first) != 0 {
		t.Fatalf("first set of a plugin that never found its node: %+v, want none", first)
	}
	waitGroups(t, ch, func(g []plugin.DeviceGroup) bool { return len(g) == 2 && len(g[0].Instances) == 2 })
	stop()

	// Restarted, its agent not answering yet (the test server is closed).
	agent.Close()
	ch, stop = start(agent.URL)
	first := next(t, ch)
	if len(first) != 2 || !slices.Equal(first[0].Instances, []plugin.DeviceInstance{{ID: "a1", Healthy: true}, {ID: "a2", Healthy: true}}) {
		t.Fatalf("first set after a restart: %+v, want the node's 2 warm sandboxes and its cold slot", first)
	}
	stop()

	// The address it calls counts, wherever it comes from: no address in
	// the block and NOMAD_ADDR naming the agent is the same agent.
	t.Setenv("NOMAD_ADDR", agent.URL)
	ch, stop = start("")
	if first := next(t, ch); len(first) != 2 {
		t.Fatalf("first set with the agent in NOMAD_ADDR: %+v, want the node's", first)
	}
	stop()

	// Another agent's plugin (another address, in the block or in
	// NOMAD_ADDR) has no memo, and a state another node wrote into the
	// remembered dir is not sent.
	ch, stop = start("http://127.0.0.1:1")
	if first := next(t, ch); len(first) != 0 {
		t.Fatalf("first set for another agent: %+v, want none", first)
	}
	stop()
	t.Setenv("NOMAD_ADDR", "http://127.0.0.1:2")
	ch, stop = start("")
	if first := next(t, ch); len(first) != 0 {
		t.Fatalf("first set for another agent in NOMAD_ADDR: %+v, want none", first)
	}
	stop()
	st.NodeID = "another-node"
	if err := WriteState(StateDir(dataDir), st); err != nil {
		t.Fatal(err)
	}
	ch, stop = start(agent.URL)
	if first := next(t, ch); len(first) != 0 {
		t.Fatalf("first set from another node's state: %+v, want none", first)
	}
	stop()
}

// A bad block never fails SetConfig (the agent would not start); the
// plugin then reports no devices.
func TestBadConfigKeepsTheAgentUp(t *testing.T) {
	p := newPlugin(t)
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

// A TLS file that is not there is refused when the block arrives, in the
// log naming the attribute and the path, as the driver refuses it: not
// found out later as a client that cannot be built.
func TestMissingCAFileIsNamed(t *testing.T) {
	var log bytes.Buffer
	p := New(hclog.New(&hclog.LoggerOptions{Output: &log}), "0.1.0")
	p.memoDir = t.TempDir()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	configure(t, p, map[string]any{"address": "https://127.0.0.1:4646", "ca_file": ca})
	if api, _ := p.config(); api != nil {
		t.Fatalf("config with a missing ca_file accepted: %+v", api)
	}
	if want := "ca_file: stat " + ca + ": no such file"; !strings.Contains(log.String(), want) {
		t.Fatalf("log does not say %q:\n%s", want, log.String())
	}
}

func TestReserveNamesTheInstance(t *testing.T) {
	p := newPlugin(t)
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
