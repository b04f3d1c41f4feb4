package sandbox

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-pool/internal/nomadtest"
)

// agentSandbox is a running sandbox allocation on a real Nomad dev agent.
type agentSandbox struct {
	agent *nomadtest.Agent
	ref   Ref
}

// startSandboxes starts a dev agent and one sleeping allocation per task driver
// (raw_exec, and exec when the node has it), and returns them by driver name.
func startSandboxes(t testing.TB) (*Runner, map[string]agentSandbox) {
	t.Helper()
	a := nomadtest.Start(t, nomadtest.Options{})
	drivers := []string{"raw_exec"}
	if d, ok := a.WaitDriver("exec", 20*time.Second, func(d *api.DriverInfo) bool { return d.Detected && d.Healthy }); ok {
		drivers = append(drivers, "exec")
	} else {
		t.Logf("exec driver not healthy on this node (%+v): testing raw_exec only", d)
	}
	job := &api.Job{
		ID: new("sandboxes"), Name: new("sandboxes"), Type: new("batch"),
		Datacenters: []string{"*"},
	}
	for _, drv := range drivers {
		job.TaskGroups = append(job.TaskGroups, &api.TaskGroup{
			Name:          new(drv),
			Count:         new(1),
			RestartPolicy: &api.RestartPolicy{Attempts: new(0), Mode: new("fail")},
			Tasks: []*api.Task{{
				Name:      "sandbox",
				Driver:    drv,
				Config:    map[string]any{"command": "/bin/sleep", "args": []string{"3600"}},
				Env:       map[string]string{"SANDBOX_OWN": "warm-" + drv},
				Resources: &api.Resources{CPU: new(100), MemoryMB: new(64)},
			}},
		})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, _, err := a.Client.Jobs().Register(job, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		t.Fatalf("register sandbox job: %v", err)
	}
	out := map[string]agentSandbox{}
	for len(out) < len(drivers) {
		allocs, _, err := a.Client.Jobs().Allocations("sandboxes", false, (&api.QueryOptions{}).WithContext(ctx))
		if err != nil {
			t.Fatalf("list allocations: %v", err)
		}
		for _, al := range allocs {
			ts := al.TaskStates["sandbox"]
			if al.ClientStatus == "failed" {
				t.Fatalf("sandbox %s failed: %+v", al.TaskGroup, ts)
			}
			if al.ClientStatus == "running" && ts != nil && ts.State == "running" {
				out[al.TaskGroup] = agentSandbox{agent: a, ref: Ref{
					Namespace: "default", AllocID: al.ID, Task: "sandbox",
					// A dev agent keeps allocations in <data_dir>/alloc.
					HostAllocDir: filepath.Join(a.DataDir, "alloc", al.ID),
				}}
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("sandboxes not running: %v", ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
	for drv, s := range out {
		if _, err := os.Stat(s.ref.HostAllocDir); err != nil {
			t.Fatalf("%s: host alloc dir: %v", drv, err)
		}
	}
	// Before the agent goes: stop the sandboxes, and end what raw_exec on
	// cgroups v1 leaves of their runs.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// All of the job's allocations, with those that replaced stopped ones.
		ids := map[string]bool{}
		for _, s := range out {
			ids[s.ref.AllocID] = true
		}
		if allocs, _, err := a.Client.Jobs().Allocations("sandboxes", true, (&api.QueryOptions{}).WithContext(ctx)); err == nil {
			for _, al := range allocs {
				ids[al.ID] = true
			}
		}
		_, _, _ = a.Client.Jobs().Deregister("sandboxes", true, (&api.WriteOptions{}).WithContext(ctx))
		for ctx.Err() == nil {
			allocs, _, err := a.Client.Jobs().Allocations("sandboxes", false, (&api.QueryOptions{}).WithContext(ctx))
			if err != nil || allTerminal(allocs) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		// Nomad leaves tasks running when its agent is killed, by design; end
		// everything these sandboxes started (their processes carry their id).
		for id := range ids {
			for _, pid := range allocPids(id) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	logger := hclog.New(&hclog.LoggerOptions{Name: "sandbox", Level: hclog.Debug, Output: testWriter{t}})
	return &Runner{Client: a.Client, Logger: logger, PollInterval: 10 * time.Millisecond}, out
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) { w.t.Logf("%s", p); return len(p), nil }

func allTerminal(allocs []*api.AllocationListStub) bool {
	for _, a := range allocs {
		if a.ClientStatus == "pending" || a.ClientStatus == "running" {
			return false
		}
	}
	return true
}

// allocPids lists the live host processes started in an allocation, found by the
// NOMAD_ALLOC_ID in their environment.
func allocPids(allocID string) []int {
	want := []byte("NOMAD_ALLOC_ID=" + allocID + "\x00")
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || !alive(pid) {
			continue
		}
		if env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ")); err == nil && bytes.Contains(env, want) {
			pids = append(pids, pid)
		}
	}
	return pids
}
