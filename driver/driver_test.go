package driver

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/agentkernel/agentkernel-pool/driver/sandbox"
	"github.com/agentkernel/agentkernel-pool/internal/nodeattr"
	"github.com/agentkernel/agentkernel-pool/plugin/proto/base"
	"github.com/agentkernel/agentkernel-pool/plugin/proto/drivers"
)

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
