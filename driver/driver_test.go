package driver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/vmihailenco/msgpack/v5"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/agentkernel/agentkernel-pool/driver/sandbox"
	"github.com/agentkernel/agentkernel-pool/internal/nodeattr"
	"github.com/agentkernel/agentkernel-pool/plugin"

	"github.com/agentkernel/agentkernel-pool/plugin/plugintest"
	"github.com/agentkernel/agentkernel-pool/plugin/proto/base"
	"github.com/agentkernel/agentkernel-pool/plugin/proto/drivers"
	"github.com/agentkernel/agentkernel-pool/plugin/proto/structs"
	"github.com/agentkernel/agentkernel-pool/pool"
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

func (e *env) waitHealth(want drivers.FingerprintResponse_HealthState) *drivers.FingerprintResponse {
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
			e.t.Fatalf("no fingerprint with health %v; last %v: %v", want, last, err)
		}
		last = fp
		if fp.Health == want {
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

func TestValidationInstanceNeverFailsAndReportsProblems(t *testing.T) {
	e := newEnv(t)
	bad := e.pluginConfig(map[string]any{"python": map[string]any{"jobspec": "/nonexistent.hcl", "size": "5", "max": "2", "claim_timeout": "soon"}})
	// Nomad's validation instance: no nomad_config, config sent twice.
	for i := 0; i < 2; i++ {
		if _, err := e.c.Base.SetConfig(context.Background(), &base.SetConfigRequest{MsgpackConfig: bad}); err != nil {
			t.Fatalf("SetConfig must not fail on a semantically bad block (it would stop the agent): %v", err)
		}
	}
	fp := e.waitHealth(drivers.FingerprintResponse_UNHEALTHY)
	for _, want := range []string{`pool "python": jobspec`, "no such file", "size (5) must not exceed max (2)", `claim_timeout: "soon"`} {
		if !strings.Contains(fp.HealthDescription, want) {
			t.Errorf("health description %q lacks %q", fp.HealthDescription, want)
		}
	}
}

func TestHealthyWithPoolAttributes(t *testing.T) {
	e := newEnv(t)
	fp := e.configure(e.devPool())
	attrs := fp.Attributes
	if got := attrs[nodeattr.Version].GetStringVal(); got != Version {
		t.Errorf("version attribute = %q, want %q", got, Version)
	}
	if got := attrs[nodeattr.Pool("dev", nodeattr.Warm)].GetIntVal(); got != 2 {
		t.Errorf("warm attribute = %d, want 2", got)
	}
	if got := attrs[nodeattr.Pool("dev", nodeattr.Max)].GetIntVal(); got != 8 {
		t.Errorf("max attribute = %d, want 8", got)
	}
	if got := attrs[nodeattr.Pool("dev", nodeattr.Target)].GetIntVal(); got != 3 {
		t.Errorf("target attribute = %d, want the pool's target 3", got)
	}
}

func TestStartRunsCommandAndReleasesOnDestroy(t *testing.T) {
	e := newEnv(t)
	e.configure(e.devPool())
	tc := e.taskConfig("agent", map[string]any{"pool": "dev", "command": "/bin/echo", "args": []string{"hi"}},
		map[string]string{"OUT": "hello\n", "NOMAD_ALLOC_DIR": "/host/path"})
	h := e.start(tc)
	if h.Config.GetId() != tc.Id || h.Version < 1 || len(h.DriverState) == 0 {
		t.Fatalf("handle does not echo the task or carry state: %+v", h)
	}
	run := e.runner.run(runIDOf(tc))
	if run == nil {
		t.Fatal("no command launched in the sandbox")
	}
	if run.spec.Command != "/bin/echo" || strings.Join(run.spec.Args, " ") != "hi" {
		t.Errorf("launched %q %q", run.spec.Command, run.spec.Args)
	}
	if _, ok := run.spec.Env["NOMAD_ALLOC_DIR"]; ok {
		t.Error("the task's host NOMAD_ALLOC_DIR reached the sandbox")
	}
	run.exit <- sandbox.ExitStatus{Code: 3}
	if r := e.wait(tc.Id); r.Result.GetExitCode() != 3 {
		t.Errorf("exit code %d, want 3", r.Result.GetExitCode())
	}
	// A second WaitTask answers at once with the same result.
	if r := e.wait(tc.Id); r.Result.GetExitCode() != 3 {
		t.Errorf("repeated WaitTask exit code %d, want 3", r.Result.GetExitCode())
	}
	out, _ := os.ReadFile(tc.StdoutPath)
	if string(out) != "hello\n" {
		t.Errorf("task stdout = %q", out)
	}
	if _, err := e.c.Driver.DestroyTask(context.Background(), &drivers.DestroyTaskRequest{TaskId: tc.Id, Force: true}); err != nil {
		t.Fatal(err)
	}
	if got := e.pool.releasedIDs(); len(got) != 1 {
		t.Errorf("released %v, want the one claimed sandbox", got)
	}
	// Idempotent: destroying again, or an unknown id, is fine.
	if _, err := e.c.Driver.DestroyTask(context.Background(), &drivers.DestroyTaskRequest{TaskId: tc.Id, Force: true}); err != nil {
		t.Errorf("second DestroyTask: %v", err)
	}
}

func TestUnknownPoolFailsAtOnceListingPools(t *testing.T) {
	e := newEnv(t)
	e.configure(e.devPool())
	_, err := e.c.Driver.StartTask(context.Background(), &drivers.StartTaskRequest{Task: e.taskConfig("agent", map[string]any{"pool": "gpu"}, nil)})
	if err == nil || !strings.Contains(err.Error(), `pool "gpu" is not configured`) || !strings.Contains(err.Error(), "pools here: dev") {
		t.Fatalf("error %v does not name the pool and list this node's pools", err)
	}
	if recoverable(err) {
		t.Error("an unknown pool must not be retried")
	}
}

// A task that asks for a device would run without it: refused before any
// claim, naming the field and where the device belongs.
func TestDeviceRequestIsRefused(t *testing.T) {
	e := newEnv(t)
	e.configure(e.devPool())
	tc := e.taskConfig("agent", map[string]any{"pool": "dev", "command": "x"}, nil)
	tc.DeviceEnv = map[string]string{"NVIDIA_VISIBLE_DEVICES": "GPU-1"}
	_, err := e.c.Driver.StartTask(context.Background(), &drivers.StartTaskRequest{Task: tc})
	if err == nil || recoverable(err) || !strings.Contains(err.Error(), "resources: device requests cannot reach a sandbox") {
		t.Fatalf("want a non-recoverable error naming the device request, got %v", err)
	}
	if n := len(e.pool.claimIDs()); n != 0 {
		t.Errorf("%d sandboxes claimed for a task that cannot run", n)
	}
}

func TestClaimFailureIsRecoverable(t *testing.T) {
	e := newEnv(t)
	e.configure(e.devPool())
	e.pool.claimErr = errors.New(`claim warm allocation in pool "dev": nomad api: 503`)
	_, err := e.c.Driver.StartTask(context.Background(), &drivers.StartTaskRequest{Task: e.taskConfig("agent", map[string]any{"pool": "dev", "command": "x"}, nil)})
	if err == nil || !recoverable(err) || !strings.Contains(err.Error(), `claim warm allocation in pool "dev": nomad api: 503`) {
		t.Fatalf("want a recoverable claim error, got %v", err)
	}
}

func TestLaunchFailureReleasesClaim(t *testing.T) {
	e := newEnv(t)
	e.configure(e.devPool())
	e.runner.launchErr = errors.New("exec: connection refused")
	_, err := e.c.Driver.StartTask(context.Background(), &drivers.StartTaskRequest{Task: e.taskConfig("agent", map[string]any{"pool": "dev", "command": "x"}, nil)})
	if err == nil || !recoverable(err) {
		t.Fatalf("want a recoverable launch error, got %v", err)
	}
	if got := e.pool.releasedIDs(); len(got) != 1 {
		t.Errorf("claimed sandbox not released after a failed start: released %v", got)
	}
}

// StartTask does not wait for the launch session's answer; when the answer is
// a failure, the task ends with it, and Destroy gives the sandbox back.
func TestStartAnsweredLateWithAFailureEndsTheTask(t *testing.T) {
	e := newEnv(t)
	e.configure(e.devPool())
	e.runner.startErr = errors.New("launch command in allocation 1234abcd: the launch session could not start the run")
	tc := e.taskConfig("agent", map[string]any{"pool": "dev", "command": "x"}, nil)
	e.start(tc)
	r := e.wait(tc.Id)
	if r.Result.GetExitCode() != 1 || !strings.Contains(r.Err, "the launch session could not start the run") {
		t.Fatalf("want exit code 1 with the session's answer, got %+v", r)
	}
	if _, err := e.c.Driver.DestroyTask(context.Background(), &drivers.DestroyTaskRequest{TaskId: tc.Id, Force: true}); err != nil {
		t.Fatal(err)
	}
	if got := e.pool.releasedIDs(); len(got) != 1 {
		t.Errorf("released %v, want the claimed sandbox", got)
	}
}

func TestStopDeliversKillSignalFirst(t *testing.T) {
	e := newEnv(t)
	e.configure(e.devPool())
	tc := e.taskConfig("agent", map[string]any{"pool": "dev", "command": "sleep"}, nil)
	e.start(tc)
	if _, err := e.c.Driver.StopTask(context.Background(), &drivers.StopTaskRequest{TaskId: tc.Id, Signal: "SIGINT", Timeout: durationpb.New(time.Second)}); err != nil {
		t.Fatal(err)
	}
	run := e.runner.run(runIDOf(tc))
	if len(run.signals) == 0 || run.signals[0] != "SIGINT" {
		t.Errorf("signals %v, want SIGINT first", run.signals)
	}
	if r := e.wait(tc.Id); r.Result.GetSignal() != 2 {
		t.Errorf("signal %d, want 2", r.Result.GetSignal())
	}
}

func TestIdleSandboxHoldsUntilStopped(t *testing.T) {
	e := newEnv(t)
	e.configure(e.devPool())
	tc := e.taskConfig("idle", map[string]any{"pool": "dev"}, map[string]string{"OUT": "task-env"})
	e.start(tc)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := e.c.Driver.WaitTask(ctx, &drivers.WaitTaskRequest{TaskId: tc.Id}); err == nil {
		t.Fatal("an idle sandbox task exited on its own")
	}
	// nomad alloc exec is redirected into the sandbox, with the task's env.
	resp, err := e.c.Driver.ExecTask(context.Background(), &drivers.ExecTaskRequest{TaskId: tc.Id, Command: []string{"cat", "x"}})
	if err != nil {
		t.Fatal(err)
	}
	if string(resp.Stdout) != "cat||task-env" || resp.Result.GetExitCode() != 2 {
		t.Errorf("exec stdout %q exit %d", resp.Stdout, resp.Result.GetExitCode())
	}
	if _, err := e.c.Driver.StopTask(context.Background(), &drivers.StopTaskRequest{TaskId: tc.Id, Timeout: durationpb.New(time.Second)}); err != nil {
		t.Fatal(err)
	}
	if r := e.wait(tc.Id); r.Result.GetExitCode() != 0 || r.Err != "" {
		t.Errorf("stopped idle task: %+v", r)
	}
}

func TestSandboxKilledFromOutsideFailsTask(t *testing.T) {
	e := newEnv(t)
	e.configure(e.devPool())
	tc := e.taskConfig("idle", map[string]any{"pool": "dev"}, nil)
	st := e.state(e.start(tc))
	e.runner.kill(st.Claim.AllocID)
	r := e.wait(tc.Id)
	if r.Result.GetExitCode() == 0 || !strings.Contains(r.Err, "stopped from outside") {
		t.Errorf("want a failure saying the sandbox was stopped from outside, got %+v", r)
	}
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

func TestRecoverInNewProcess(t *testing.T) {
	e := newEnv(t)
	e.configure(e.devPool())
	tc := e.taskConfig("agent", map[string]any{"pool": "dev", "command": "x"}, map[string]string{"OUT": "0123456789"})
	h := e.start(tc)
	waitFile(t, tc.StdoutPath, "0123456789")
	_ = e.drv.Shutdown(context.Background()) // the plugin process goes away; the command lives on

	// A new plugin process: new driver, same Nomad (fakes), handle from the client's
	// state DB, which has lost the driver config bytes.
	e2 := e.newProcess()
	h.Config.MsgpackDriverConfig = nil
	if _, err := e2.c.Driver.RecoverTask(context.Background(), &drivers.RecoverTaskRequest{Handle: h}); err != nil {
		t.Fatalf("RecoverTask: %v", err)
	}
	// Recovering again in the same process is a no-op.
	if _, err := e2.c.Driver.RecoverTask(context.Background(), &drivers.RecoverTaskRequest{Handle: h}); err != nil {
		t.Fatalf("second RecoverTask: %v", err)
	}
	// The recovered claim is put on record (the plugin before may have
	// ended before its record was written behind it).
	claimed := e.pool.claimIDs()[0]
	deadline := time.Now().Add(5 * time.Second)
	for !slices.Contains(e.pool.adoptedIDs(), claimed) {
		if time.Now().After(deadline) {
			t.Fatalf("recovered claim of %s not adopted; adopted %v", claimed, e.pool.adoptedIDs())
		}
		time.Sleep(10 * time.Millisecond)
	}
	e.runner.run(runIDOf(tc)).exit <- sandbox.ExitStatus{Code: 4}
	if r := e2.wait(tc.Id); r.Result.GetExitCode() != 4 {
		t.Errorf("exit code after recovery %d, want 4", r.Result.GetExitCode())
	}
	out, _ := os.ReadFile(tc.StdoutPath)
	if string(out) != "0123456789" {
		t.Errorf("output after recovery %q: repeated or lost", out)
	}
}

// A recovered task whose sandbox another claimer's record holds is not the
// task's: its command is killed and the task fails saying so.
func TestRecoveredClaimLostStopsCommand(t *testing.T) {
	e := newEnv(t)
	e.configure(e.devPool())
	tc := e.taskConfig("agent", map[string]any{"pool": "dev", "command": "x"}, nil)
	h := e.start(tc)
	_ = e.drv.Shutdown(context.Background())

	e.pool.mu.Lock()
	e.pool.adoptErr = fmt.Errorf("adopt claim: %w", pool.ErrClaimLost)
	e.pool.mu.Unlock()
	e2 := e.newProcess()
	h.Config.MsgpackDriverConfig = nil
	if _, err := e2.c.Driver.RecoverTask(context.Background(), &drivers.RecoverTaskRequest{Handle: h}); err != nil {
		t.Fatalf("RecoverTask: %v", err)
	}
	r := e2.wait(tc.Id)
	if r.Result.GetExitCode() == 0 || !strings.Contains(r.Err, "claimed by another task") {
		t.Errorf("want a failure saying the sandbox is another task's, got %+v", r)
	}
	run := e.runner.run(runIDOf(tc))
	e.runner.mu.Lock()
	sigs := slices.Clone(run.signals)
	e.runner.mu.Unlock()
	if !slices.Contains(sigs, "SIGKILL") {
		t.Errorf("command not killed; signals %v", sigs)
	}
	// The sandbox's other processes are the other claimer's: never ended.
	if _, err := e2.c.Driver.DestroyTask(context.Background(), &drivers.DestroyTaskRequest{TaskId: tc.Id, Force: true}); err != nil {
		t.Fatal(err)
	}
	e.runner.mu.Lock()
	ended := slices.Clone(e.runner.ended)
	e.runner.mu.Unlock()
	if len(ended) != 0 {
		t.Errorf("sandboxes %v ended for a task whose sandbox another claimer holds", ended)
	}
}

// An agent restart while the plugin config is unusable (a pool's template
// unreadable, token_file not written yet) recovers the running task from its
// handle alone. The task keeps running while the driver is unhealthy and
// reports its exit code and all its output, once, when the config is fixed.
func TestRecoverWhileConfigUnusable(t *testing.T) {
	for _, broken := range []string{"jobspec", "token_file"} {
		t.Run(broken, func(t *testing.T) {
			e := newEnv(t)
			e.configure(e.devPool())
			tc := e.taskConfig("agent", map[string]any{"pool": "dev", "command": "x"}, map[string]string{"OUT": "0123456789"})
			h := e.start(tc)
			waitFile(t, tc.StdoutPath, "0123456789")
			_ = e.drv.Shutdown(context.Background())

			d2 := New(hclog.NewNullLogger(), fakeBackend(e.pool, e.runner, nil))
			d2.reloadEvery = 50 * time.Millisecond
			t.Cleanup(func() { _ = d2.Shutdown(context.Background()) })
			e2 := &env{t: t, pool: e.pool, runner: e.runner, drv: d2, c: plugintest.Serve(t, d2), dir: e.dir}
			jobspec, tokenFile := filepath.Join(e.dir, "later.nomad.hcl"), filepath.Join(e.dir, "token")
			fix := func() error { return os.WriteFile(tokenFile, []byte("tok\n"), 0o600) }
			if broken == "jobspec" {
				if err := fix(); err != nil {
					t.Fatal(err)
				}
				fix = func() error { return os.WriteFile(jobspec, []byte(`job "x" {}`), 0o644) }
			} else if err := os.WriteFile(jobspec, []byte(`job "x" {}`), 0o644); err != nil {
				t.Fatal(err)
			}
			cfg := map[string]any{"address": nil, "ca_file": nil, "cert_file": nil, "key_file": nil, "namespace": nil,
				"tls_server_name": nil, "token_file": tokenFile, "pool": map[string]any{"dev": map[string]any{"jobspec": jobspec}}}
			if _, err := e2.c.Base.SetConfig(context.Background(), &base.SetConfigRequest{MsgpackConfig: encode(t, cfg), PluginApiVersion: "v0.1.0",
				NomadConfig: &base.NomadConfig{Driver: &base.NomadDriverConfig{ClientMinPort: 14000, ClientMaxPort: 14512}}}); err != nil {
				t.Fatalf("SetConfig: %v", err)
			}
			if fp := e2.waitHealth(drivers.FingerprintResponse_UNHEALTHY); !strings.Contains(fp.HealthDescription, broken) {
				t.Fatalf("health %q does not name %s", fp.HealthDescription, broken)
			}
			h.Config.MsgpackDriverConfig = nil
			if _, err := e2.c.Driver.RecoverTask(context.Background(), &drivers.RecoverTaskRequest{Handle: h}); err != nil {
				t.Fatalf("RecoverTask with the config unusable: %v", err)
			}
			e.runner.run(runIDOf(tc)).exit <- sandbox.ExitStatus{Code: 4} // the command ends meanwhile
			if err := fix(); err != nil {
				t.Fatal(err)
			}
			e2.waitHealth(drivers.FingerprintResponse_HEALTHY)
			if r := e2.wait(tc.Id); r.Result.GetExitCode() != 4 {
				t.Errorf("exit code after recovery %d, want 4", r.Result.GetExitCode())
			}
			if out, _ := os.ReadFile(tc.StdoutPath); string(out) != "0123456789" {
				t.Errorf("output after recovery %q: repeated or lost", out)
			}
		})
	}
}

// startedThenPluginGone starts a task with a command on a dev pool, then
// shuts the plugin down: the handle and its state are what Nomad keeps.
func startedThenPluginGone(t *testing.T) (*env, *drivers.TaskHandle, driverState) {
	t.Helper()
	e := newEnv(t)
	e.configure(e.devPool())
	h := e.start(e.taskConfig("agent", map[string]any{"pool": "dev", "command": "x"}, nil))
	_ = e.drv.Shutdown(context.Background())
	return e, h, e.state(h)
}

func TestRecoverWithSandboxGoneFails(t *testing.T) {
	e, h, st := startedThenPluginGone(t)
	if err := os.RemoveAll(st.HostAllocDir); err != nil { // the sandbox was purged while the plugin was down
		t.Fatal(err)
	}

	e2 := e.newProcess()
	_, err := e2.c.Driver.RecoverTask(context.Background(), &drivers.RecoverTaskRequest{Handle: h})
	if err == nil || !strings.Contains(err.Error(), "is gone") {
		t.Fatalf("want an error saying the sandbox is gone, got %v", err)
	}
}

// A command that replaced its run's files while no plugin watched (the plugin
// was down) is found out at recovery: the task is recovered only to end with
// an event naming the tampering, and Destroy purges the sandbox.
func TestRecoverTamperedEndsWithReason(t *testing.T) {
	e, h, st := startedThenPluginGone(t)
	runs := filepath.Join(st.HostAllocDir, "alloc", ".agentkernel")
	if err := os.Rename(runs, runs+".old"); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/dev/zero", runs); err != nil {
		t.Fatal(err)
	}

	e2 := e.newProcess()
	evctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events, err := e2.drv.TaskEvents(evctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e2.c.Driver.RecoverTask(context.Background(), &drivers.RecoverTaskRequest{Handle: h}); err != nil {
		t.Fatalf("RecoverTask: %v", err)
	}
	r := e2.wait(h.Config.Id)
	if r.Result.GetExitCode() == 0 || !strings.Contains(r.Err, "tampered with") {
		t.Errorf("want a failure naming the tampering, got %+v", r)
	}
	select {
	case ev := <-events:
		if !strings.Contains(ev.Message, "tampered with") {
			t.Errorf("event %q does not name the tampering", ev.Message)
		}
	case <-time.After(5 * time.Second):
		t.Error("no event naming the tampering")
	}
	if _, err := e2.c.Driver.DestroyTask(context.Background(), &drivers.DestroyTaskRequest{TaskId: h.Config.Id, Force: true}); err != nil {
		t.Fatalf("DestroyTask: %v", err)
	}
	if !slices.Contains(e.pool.released, st.Claim.AllocID) {
		t.Errorf("sandbox %s not released; released %v", st.Claim.AllocID, e.pool.released)
	}
}

func TestUnknownTaskIDs(t *testing.T) {
	e := newEnv(t)
	e.configure(e.devPool())
	ctx := context.Background()
	if _, err := e.c.Driver.StopTask(ctx, &drivers.StopTaskRequest{TaskId: "nope"}); err != nil {
		t.Errorf("StopTask of an unknown id: %v", err)
	}
	if _, err := e.c.Driver.DestroyTask(ctx, &drivers.DestroyTaskRequest{TaskId: "nope", Force: true}); err != nil {
		t.Errorf("DestroyTask of an unknown id: %v", err)
	}
	if _, err := e.c.Driver.WaitTask(ctx, &drivers.WaitTaskRequest{TaskId: "nope"}); err == nil {
		t.Error("WaitTask of an unknown id succeeded")
	}
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

// A task `user` cannot change who runs the command (the sandbox's user,
// from the warm template, does): the start says so in a task event rather
// than ignoring it silently.
func TestTaskUserNotUsedIsSaid(t *testing.T) {
	e := newEnv(t)
	e.configure(e.devPool())
	evctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events, err := e.drv.TaskEvents(evctx)
	if err != nil {
		t.Fatal(err)
	}
	tc := e.taskConfig("agent", map[string]any{"pool": "dev", "command": "x"}, nil)
	tc.User = "nobody"
	e.start(tc)
	timeout := time.After(5 * time.Second)
	for {
		select {
		case ev := <-events:
			if strings.Contains(ev.Message, `Task user "nobody" not used`) && strings.Contains(ev.Message, "warm template") {
				return
			}
		case <-timeout:
			t.Fatal("no task event saying the task user is not used")
		}
	}
}
