package driver

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/agentkernel/agentkernel-pool/driver/sandbox"
	"github.com/agentkernel/agentkernel-pool/plugin/plugintest"
	"github.com/agentkernel/agentkernel-pool/plugin/proto/base"
	"github.com/agentkernel/agentkernel-pool/plugin/proto/drivers"
	"github.com/agentkernel/agentkernel-pool/pool"
)

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
