package plugin_test

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/agentkernel/agentkernel-pool/plugin"
	"github.com/agentkernel/agentkernel-pool/plugin/plugintest"
	"github.com/agentkernel/agentkernel-pool/plugin/proto/drivers"
	"github.com/agentkernel/agentkernel-pool/plugin/proto/structs"
)

const recoverableTypeURL = "type.googleapis.com/hashicorp.nomad.plugins.shared.structs.RecoverableError"

func fullTaskConfig(t *testing.T) *drivers.TaskConfig {
	cfg := plugintest.NewTaskConfig("a1b2c3d4-0000-0000-0000-000000000000", "agent", plugintest.Msgpack(t, map[string]any{"command": "python3"}))
	cfg.Resources = &drivers.Resources{
		AllocatedResources: &drivers.AllocatedTaskResources{
			Cpu:    &drivers.AllocatedCpuResources{CpuShares: 500},
			Memory: &drivers.AllocatedMemoryResources{MemoryMb: 256, MemoryMaxMb: 512},
		},
		LinuxResources: &drivers.LinuxResources{MemoryLimitBytes: 512 << 20, CpusetCpus: "2,3", CpusetCgroup: "/sys/fs/cgroup/nomad.slice/x.scope"},
	}
	cfg.StdoutPath = "/alloc/logs/.agent.stdout.fifo"
	cfg.Mounts = []*drivers.Mount{{TaskPath: "/data", HostPath: "/srv/data"}}
	return cfg
}

func startTask(t *testing.T, c *plugintest.Client, cfg *drivers.TaskConfig) *drivers.StartTaskResponse {
	t.Helper()
	resp, err := c.Driver.StartTask(t.Context(), &drivers.StartTaskRequest{Task: cfg})
	if err != nil {
		t.Fatalf("start task: %v", err)
	}
	return resp
}

func TestTaskConfigSchemaAndCapabilities(t *testing.T) {
	_, c, ctx := setup(t)
	schema, err := c.Driver.TaskConfigSchema(ctx, &drivers.TaskConfigSchemaRequest{})
	if err != nil || schema.GetSpec().GetObject() == nil {
		t.Fatalf("task config schema = %v, %v", schema, err)
	}
	caps, err := c.Driver.Capabilities(ctx, &drivers.CapabilitiesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	want := &drivers.DriverCapabilities{
		SendSignals: true,
		Exec:        true,
		FsIsolation: drivers.DriverCapabilities_IMAGE,
		NetworkIsolationModes: []drivers.NetworkIsolationSpec_NetworkIsolationMode{
			drivers.NetworkIsolationSpec_HOST, drivers.NetworkIsolationSpec_GROUP},
		MountConfigs: drivers.DriverCapabilities_NO_MOUNTS,
	}
	if !proto.Equal(caps.GetCapabilities(), want) {
		t.Fatalf("capabilities = %v, want %v", caps.GetCapabilities(), want)
	}
}

func TestStartTaskEchoesConfigInHandle(t *testing.T) {
	d, c, _ := setup(t)
	cfg := fullTaskConfig(t)
	resp := startTask(t, c, cfg)

	h := resp.GetHandle()
	if !proto.Equal(h.GetConfig(), cfg) {
		t.Fatalf("handle config = %v, want the request's config %v", h.GetConfig(), cfg)
	}
	if h.GetVersion() < 1 || h.GetState() != drivers.TaskState_RUNNING || string(h.GetDriverState()) != "state:"+cfg.Id {
		t.Fatalf("handle = version %d state %v driver_state %q", h.GetVersion(), h.GetState(), h.GetDriverState())
	}
	wantNet := &drivers.NetworkOverride{PortMap: map[string]int32{"http": 8080}, Addr: "10.0.0.2", AutoAdvertise: true}
	if !proto.Equal(resp.GetNetworkOverride(), wantNet) {
		t.Fatalf("network override = %v", resp.GetNetworkOverride())
	}

	var got *plugin.TaskConfig
	d.locked(func() { got = d.started[0] })
	if got.ID != cfg.Id || got.AllocID != cfg.AllocId || got.Name != "agent" || got.Namespace != "default" ||
		got.Env["NOMAD_TASK_NAME"] != "agent" || got.StdoutPath != cfg.StdoutPath {
		t.Fatalf("driver saw config %+v", got)
	}
	var dc struct {
		Command string `codec:"command"`
	}
	if err := plugin.DecodeConfig(got.DriverConfig, &dc); err != nil || dc.Command != "python3" {
		t.Fatalf("driver config = %+v, %v", dc, err)
	}
	wantRes := plugin.Resources{CPUShares: 500, MemoryMB: 256, MemoryMaxMB: 512, MemoryLimitBytes: 512 << 20,
		CpusetCpus: "2,3", CgroupPath: "/sys/fs/cgroup/nomad.slice/x.scope"}
	if got.Resources == nil || *got.Resources != wantRes {
		t.Fatalf("resources = %+v, want %+v", got.Resources, wantRes)
	}
}

func TestStartTaskLargeRequest(t *testing.T) {
	_, c, _ := setup(t)
	cfg := fullTaskConfig(t)
	cfg.Env["BIG"] = strings.Repeat("x", 8<<20) // over gRPC's 4 MiB default
	startTask(t, c, cfg)
}

func TestStartTaskRecoverableError(t *testing.T) {
	d, c, ctx := setup(t)
	d.locked(func() { d.startErr = plugin.Recoverable(errors.New("no warm allocation yet")) })
	_, err := c.Driver.StartTask(ctx, &drivers.StartTaskRequest{Task: fullTaskConfig(t)})
	assertAppError(t, err, "no warm allocation yet")
	st := status.Convert(err)
	if st.Code() != codes.FailedPrecondition {
		t.Fatalf("code = %v, want FailedPrecondition", st.Code())
	}
	details := st.Proto().GetDetails()
	if len(details) == 0 || details[0].GetTypeUrl() != recoverableTypeURL {
		t.Fatalf("details = %v, want first detail %s", details, recoverableTypeURL)
	}
	var re structs.RecoverableError
	if err := details[0].UnmarshalTo(&re); err != nil || !re.GetRecoverable() {
		t.Fatalf("detail = %v, %v; want recoverable=true", &re, err)
	}
}

func TestStartTaskFatalError(t *testing.T) {
	d, c, ctx := setup(t)
	d.locked(func() { d.startErr = errors.New(`unknown pool "nope"`) })
	_, err := c.Driver.StartTask(ctx, &drivers.StartTaskRequest{Task: fullTaskConfig(t)})
	assertAppError(t, err, `unknown pool "nope"`)
	if n := len(status.Convert(err).Proto().GetDetails()); n != 0 {
		t.Fatalf("fatal error has %d details, want none", n)
	}

	// A driver echoing a status the client reads as plugin death is rewritten.
	d.locked(func() { d.startErr = status.Error(codes.Unavailable, "nomad api down") })
	_, err = c.Driver.StartTask(ctx, &drivers.StartTaskRequest{Task: fullTaskConfig(t)})
	assertAppError(t, err, "nomad api down")
}

func TestStartTaskPanic(t *testing.T) {
	d, c, ctx := setup(t)
	d.locked(func() { d.panicIn = "StartTask" })
	_, err := c.Driver.StartTask(ctx, &drivers.StartTaskRequest{Task: fullTaskConfig(t)})
	assertAppError(t, err, "boom in StartTask")
}

func TestRecoverTaskFromHandle(t *testing.T) {
	_, c, ctx := setup(t)
	cfg := fullTaskConfig(t)
	handle := startTask(t, c, cfg).GetHandle()

	// A fresh plugin process gets the persisted handle, without driver config.
	d2 := newFakeDriver()
	c2 := plugintest.Serve(t, d2)
	persisted := proto.Clone(handle).(*drivers.TaskHandle)
	persisted.Config.MsgpackDriverConfig = nil
	if _, err := c2.Driver.RecoverTask(ctx, &drivers.RecoverTaskRequest{Handle: persisted}); err != nil {
		t.Fatalf("recover: %v", err)
	}
	var got *plugin.TaskHandle
	d2.locked(func() { got = d2.recovered[0] })
	if got.Config.ID != cfg.Id || got.Config.AllocID != cfg.AllocId || got.Version != handle.GetVersion() ||
		got.State != plugin.TaskStateRunning || string(got.DriverState) != "state:"+cfg.Id {
		t.Fatalf("driver got handle %+v, config %+v", got, got.Config)
	}

	// The recovered task answers WaitTask under the handle's id.
	done := make(chan *drivers.WaitTaskResponse, 1)
	go func() {
		resp, _ := c2.Driver.WaitTask(ctx, &drivers.WaitTaskRequest{TaskId: cfg.Id})
		done <- resp
	}()
	d2.exit(cfg.Id, plugin.ExitResult{ExitCode: 4})
	if resp := <-done; resp.GetResult().GetExitCode() != 4 {
		t.Fatalf("wait after recover = %v", resp)
	}
}

func TestRecoverTaskError(t *testing.T) {
	_, c, ctx := setup(t)
	h := &drivers.TaskHandle{Version: 1, Config: &drivers.TaskConfig{Id: "a/b/c"}, DriverState: []byte("garbage")}
	_, err := c.Driver.RecoverTask(ctx, &drivers.RecoverTaskRequest{Handle: h})
	assertAppError(t, err, "bad driver state")
}

func TestWaitTaskConcurrentWaiters(t *testing.T) {
	d, c, ctx := setup(t)
	cfg := fullTaskConfig(t)
	startTask(t, c, cfg)

	var wg sync.WaitGroup
	results := make([]*drivers.WaitTaskResponse, 3)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := c.Driver.WaitTask(ctx, &drivers.WaitTaskRequest{TaskId: cfg.Id})
			if err != nil {
				t.Errorf("wait %d: %v", i, err)
			}
			results[i] = resp
		}()
	}
	d.exit(cfg.Id, plugin.ExitResult{ExitCode: 3, Signal: 9, OOMKilled: true, Err: "killed by oom"})
	wg.Wait()
	want := &drivers.WaitTaskResponse{Result: &drivers.ExitResult{ExitCode: 3, Signal: 9, OomKilled: true}, Err: "killed by oom"}
	for i, r := range results {
		if !proto.Equal(r, want) {
			t.Fatalf("wait %d = %v, want %v", i, r, want)
		}
	}
	// Already exited: answered at once, again.
	resp, err := c.Driver.WaitTask(ctx, &drivers.WaitTaskRequest{TaskId: cfg.Id})
	if err != nil || !proto.Equal(resp, want) {
		t.Fatalf("repeat wait = %v, %v", resp, err)
	}
}

func TestWaitTaskErrors(t *testing.T) {
	d, c, ctx := setup(t)
	_, err := c.Driver.WaitTask(ctx, &drivers.WaitTaskRequest{TaskId: "unknown"})
	assertAppError(t, err, "task not found")

	cfg := fullTaskConfig(t)
	startTask(t, c, cfg)
	d.locked(func() { d.panicIn = "WaitTask" })
	_, err = c.Driver.WaitTask(ctx, &drivers.WaitTaskRequest{TaskId: cfg.Id})
	assertAppError(t, err, "boom in WaitTask")
}

func TestWaitTaskResultAlwaysSet(t *testing.T) {
	d, c, ctx := setup(t)
	cfg := fullTaskConfig(t)
	startTask(t, c, cfg)
	d.locked(func() { d.nilWaitResult = true })
	d.exit(cfg.Id, plugin.ExitResult{})
	resp, err := c.Driver.WaitTask(ctx, &drivers.WaitTaskRequest{TaskId: cfg.Id})
	if err != nil || resp.GetResult() == nil {
		t.Fatalf("wait with a nil driver result = %v, %v; want result set", resp, err)
	}
}

func TestStopDestroySignal(t *testing.T) {
	d, c, ctx := setup(t)
	cfg := fullTaskConfig(t)
	startTask(t, c, cfg)

	if _, err := c.Driver.SignalTask(ctx, &drivers.SignalTaskRequest{TaskId: cfg.Id, Signal: "SIGHUP"}); err != nil {
		t.Fatalf("signal: %v", err)
	}
	_, err := c.Driver.StopTask(ctx, &drivers.StopTaskRequest{TaskId: cfg.Id, Timeout: durationpb.New(5 * time.Second), Signal: "SIGINT"})
	if err != nil {
		t.Fatalf("stop: %v", err)
	}
	if _, err := c.Driver.DestroyTask(ctx, &drivers.DestroyTaskRequest{TaskId: cfg.Id, Force: true}); err != nil {
		t.Fatalf("destroy: %v", err)
	}
	d.locked(func() {
		if len(d.signals) != 1 || d.signals[0] != "SIGHUP" {
			t.Errorf("signals = %v", d.signals)
		}
		if len(d.stops) != 1 || d.stops[0] != (stopCall{id: cfg.Id, timeout: 5 * time.Second, signal: "SIGINT"}) {
			t.Errorf("stops = %+v", d.stops)
		}
		if len(d.destroys) != 1 || d.destroys[0] != (destroyCall{id: cfg.Id, force: true}) {
			t.Errorf("destroys = %+v", d.destroys)
		}
	})
}

func TestUnknownTaskErrors(t *testing.T) {
	_, c, ctx := setup(t)
	id := "no/such/task"
	checks := map[string]error{}
	_, checks["StopTask"] = c.Driver.StopTask(ctx, &drivers.StopTaskRequest{TaskId: id})
	_, checks["SignalTask"] = c.Driver.SignalTask(ctx, &drivers.SignalTaskRequest{TaskId: id, Signal: "SIGHUP"})
	_, checks["InspectTask"] = c.Driver.InspectTask(ctx, &drivers.InspectTaskRequest{TaskId: id})
	_, checks["ExecTask"] = c.Driver.ExecTask(ctx, &drivers.ExecTaskRequest{TaskId: id, Command: []string{"echo"}})
	for _, err := range checks {
		assertAppError(t, err, `task not found: "no/such/task"`)
	}
	// DestroyTask is idempotent for unknown ids.
	if _, err := c.Driver.DestroyTask(ctx, &drivers.DestroyTaskRequest{TaskId: id, Force: true}); err != nil {
		t.Fatalf("destroy unknown: %v", err)
	}
}

func TestInspectTaskFullySet(t *testing.T) {
	_, c, ctx := setup(t)
	cfg := fullTaskConfig(t)
	startTask(t, c, cfg)
	resp, err := c.Driver.InspectTask(ctx, &drivers.InspectTaskRequest{TaskId: cfg.Id})
	if err != nil {
		t.Fatal(err)
	}
	task := resp.GetTask()
	if task.GetId() != cfg.Id || task.GetState() != drivers.TaskState_RUNNING || task.GetResult() == nil {
		t.Fatalf("task status = %v", task)
	}
	if task.GetStartedAt().AsTime().Unix() != 1700000000 {
		t.Fatalf("started_at = %v", task.GetStartedAt())
	}
	// The zero completion time is sent, not left unset.
	if task.GetCompletedAt() == nil || task.GetCompletedAt().GetSeconds() != -62135596800 {
		t.Fatalf("completed_at = %v, want the zero time", task.GetCompletedAt())
	}
	if resp.GetDriver().GetAttributes()["pool"] != "python" {
		t.Fatalf("driver status = %v", resp.GetDriver())
	}
}

func TestExecTask(t *testing.T) {
	_, c, ctx := setup(t)
	cfg := fullTaskConfig(t)
	startTask(t, c, cfg)

	resp, err := c.Driver.ExecTask(ctx, &drivers.ExecTaskRequest{TaskId: cfg.Id, Command: []string{"echo", "hi"}})
	if err != nil || string(resp.GetStdout()) != "[hi]\n" || resp.GetResult() == nil || resp.GetResult().GetExitCode() != 0 {
		t.Fatalf("exec echo = %v, %v", resp, err)
	}
	resp, err = c.Driver.ExecTask(ctx, &drivers.ExecTaskRequest{TaskId: cfg.Id, Command: []string{"exit", "2"}})
	if err != nil || resp.GetResult().GetExitCode() != 2 || string(resp.GetStderr()) != "bye" {
		t.Fatalf("exec exit = %v, %v", resp, err)
	}
	resp, err = c.Driver.ExecTask(ctx, &drivers.ExecTaskRequest{TaskId: cfg.Id, Command: []string{"nothing"}})
	if err != nil || resp.GetResult() == nil {
		t.Fatalf("exec with nil result = %v, %v; want result set", resp, err)
	}
	// The request's timeout reaches the driver as a context deadline.
	_, err = c.Driver.ExecTask(ctx, &drivers.ExecTaskRequest{TaskId: cfg.Id, Command: []string{"sleep"}, Timeout: durationpb.New(50 * time.Millisecond)})
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("exec past timeout: %v, want DeadlineExceeded", err)
	}
}
