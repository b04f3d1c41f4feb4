package driver

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/vmihailenco/msgpack/v5"
	"google.golang.org/grpc/status"

	"github.com/agentkernel/agentkernel-pool/plugin"
	"github.com/agentkernel/agentkernel-pool/plugin/plugintest"
	"github.com/agentkernel/agentkernel-pool/plugin/proto/base"
	"github.com/agentkernel/agentkernel-pool/plugin/proto/drivers"
	"github.com/agentkernel/agentkernel-pool/plugin/proto/structs"
)

// env is one driver behind the real gRPC surface, over fake pool and sandbox.
type env struct {
	t      *testing.T
	pool   *fakePool
	runner *fakeRunner
	drv    *Driver
	c      *plugintest.Client
	dir    string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{t: t, pool: newFakePool(), runner: newFakeRunner(), dir: t.TempDir()}
	e.pool.dir = e.dir
	e.drv = New(hclog.NewNullLogger(), fakeBackend(e.pool, e.runner, nil))
	t.Cleanup(func() { _ = e.drv.Shutdown(context.Background()) })
	e.c = plugintest.Serve(t, e.drv)
	return e
}

func (e *env) jobspec() string {
	p := filepath.Join(e.dir, "warm.nomad.hcl")
	if err := os.WriteFile(p, []byte(`job "x" {}`), 0o644); err != nil {
		e.t.Fatal(err)
	}
	return p
}

func encode(t *testing.T, v any) []byte {
	t.Helper()
	b, err := msgpack.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (e *env) pluginConfig(pools map[string]any) []byte {
	return encode(e.t, map[string]any{"address": nil, "ca_file": nil, "cert_file": nil, "key_file": nil,
		"namespace": nil, "tls_server_name": nil, "token_file": nil, "pool": pools})
}

// configure sends SetConfig as the long-lived instance does and waits for health.
func (e *env) configure(pools map[string]any) *drivers.FingerprintResponse {
	e.t.Helper()
	ctx := context.Background()
	_, err := e.c.Base.SetConfig(ctx, &base.SetConfigRequest{MsgpackConfig: e.pluginConfig(pools), PluginApiVersion: "v0.1.0",
		NomadConfig: &base.NomadConfig{Driver: &base.NomadDriverConfig{ClientMinPort: 14000, ClientMaxPort: 14512}}})
	if err != nil {
		e.t.Fatalf("SetConfig: %v", err)
	}
	return e.waitHealth(drivers.FingerprintResponse_HEALTHY)
}

// waitHealth returns the first fingerprint with health want.
func (e *env) waitHealth(want drivers.FingerprintResponse_HealthState) *drivers.FingerprintResponse {
	e.t.Helper()
	return e.waitFingerprint("health "+want.String(), func(fp *drivers.FingerprintResponse) bool { return fp.Health == want })
}

// waitFingerprint returns the first fingerprint that satisfies ok.
func (e *env) waitFingerprint(what string, ok func(*drivers.FingerprintResponse) bool) *drivers.FingerprintResponse {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := e.c.Driver.Fingerprint(ctx, &drivers.FingerprintRequest{})
	if err != nil {
		e.t.Fatal(err)
	}
	var last *drivers.FingerprintResponse
	for {
		fp, err := s.Recv()
		if err != nil {
			e.t.Fatalf("no fingerprint with %s; last %v: %v", what, last, err)
		}
		if last = fp; ok(fp) {
			return fp
		}
	}
}

func (e *env) devPool() map[string]any {
	return map[string]any{"dev": map[string]any{"jobspec": e.jobspec(), "size": "2", "max": "8", "claim_timeout": "5s"}}
}

func (e *env) taskConfig(name string, cfg map[string]any, env map[string]string) *drivers.TaskConfig {
	tc := map[string]any{"pool": nil, "command": nil, "args": nil}
	for k, v := range cfg {
		tc[k] = v
	}
	allocDir := filepath.Join(e.dir, "alloc-"+name)
	if err := os.MkdirAll(filepath.Join(allocDir, name, "private"), 0o755); err != nil {
		e.t.Fatal(err)
	}
	for _, f := range []string{"stdout", "stderr"} { // logmon's FIFOs, as plain files
		if err := os.WriteFile(filepath.Join(allocDir, f), nil, 0o644); err != nil {
			e.t.Fatal(err)
		}
	}
	return &drivers.TaskConfig{
		Id: "0000aaaa-0000-0000-0000-000000000000/" + name + "/11111111", Name: name, AllocId: "0000aaaa-0000-0000-0000-000000000000",
		JobId: "job", Namespace: "default", MsgpackDriverConfig: encode(e.t, tc), Env: env,
		AllocDir: allocDir, StdoutPath: filepath.Join(allocDir, "stdout"), StderrPath: filepath.Join(allocDir, "stderr"),
	}
}

func (e *env) start(tc *drivers.TaskConfig) *drivers.TaskHandle {
	e.t.Helper()
	resp, err := e.c.Driver.StartTask(context.Background(), &drivers.StartTaskRequest{Task: tc})
	if err != nil {
		e.t.Fatalf("StartTask: %v", err)
	}
	return resp.Handle
}

// state is the driver state a task handle carries.
func (e *env) state(h *drivers.TaskHandle) driverState {
	e.t.Helper()
	var st driverState
	if err := json.Unmarshal(h.DriverState, &st); err != nil {
		e.t.Fatal(err)
	}
	return st
}

func (e *env) wait(id string) *drivers.WaitTaskResponse {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := e.c.Driver.WaitTask(ctx, &drivers.WaitTaskRequest{TaskId: id})
	if err != nil {
		e.t.Fatalf("WaitTask: %v", err)
	}
	return resp
}

func recoverable(err error) bool {
	st, ok := status.FromError(err)
	if !ok {
		return false
	}
	for _, d := range st.Details() {
		if r, ok := d.(*structs.RecoverableError); ok && r.Recoverable {
			return true
		}
	}
	return false
}

// newProcess is a new plugin process beside e's (same Nomad fakes and
// sandboxes), configured with the dev pool.
func (e *env) newProcess() *env {
	d2 := New(hclog.NewNullLogger(), fakeBackend(e.pool, e.runner, nil))
	e.t.Cleanup(func() { _ = d2.Shutdown(context.Background()) })
	e2 := &env{t: e.t, pool: e.pool, runner: e.runner, drv: d2, c: plugintest.Serve(e.t, d2), dir: e.dir}
	e2.configure(e.devPool())
	return e2
}

func waitFile(t *testing.T, path, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if b, _ := os.ReadFile(path); string(b) == want {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	b, _ := os.ReadFile(path)
	t.Fatalf("%s = %q, want %q", path, b, want)
}

func runIDOf(tc *drivers.TaskConfig) string {
	return runID(&plugin.TaskConfig{ID: tc.Id, AllocID: tc.AllocId})
}
