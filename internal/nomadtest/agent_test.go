package nomadtest

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"
)

// TestAgentRestartKeepsState: the launcher's agent keeps its jobs across a
// graceful restart, which the recovery tests depend on.
func TestAgentRestartKeepsState(t *testing.T) {
	a := Start(t, Options{Persistent: true})
	job := &api.Job{ID: ptr("keep"), Name: ptr("keep"), Type: ptr("batch"), Datacenters: []string{"*"},
		TaskGroups: []*api.TaskGroup{{Name: ptr("g"), Tasks: []*api.Task{{Name: "t", Driver: "raw_exec",
			Config: map[string]any{"command": "/bin/sleep", "args": []string{"600"}}}}}}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, _, err := a.Client.Jobs().Register(job, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		t.Fatal(err)
	}
	a.Restart()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel2()
	if _, _, err := a.Client.Jobs().Info("keep", (&api.QueryOptions{}).WithContext(ctx2)); err != nil {
		t.Fatalf("job lost across restart: %v", err)
	}
}

func ptr[T any](v T) *T { return &v }

// TestStopLeavesNoTasks: stopping the agent ends its tasks too, which run outside
// its process group.
func TestStopLeavesNoTasks(t *testing.T) {
	a := Start(t, Options{})
	job := &api.Job{ID: ptr("leak"), Name: ptr("leak"), Type: ptr("batch"), Datacenters: []string{"*"},
		TaskGroups: []*api.TaskGroup{{Name: ptr("g"), Tasks: []*api.Task{{Name: "t", Driver: "raw_exec",
			Config: map[string]any{"command": "/bin/sleep", "args": []string{"7777"}}}}}}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, _, err := a.Client.Jobs().Register(job, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(a.detached()) == 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	tasks := a.detached()
	if len(tasks) == 0 {
		t.Fatal("the task never started")
	}
	a.Stop()
	time.Sleep(200 * time.Millisecond)
	for _, pid := range tasks {
		if st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil && !strings.Contains(string(st), ") Z") {
			t.Errorf("process %d of the stopped agent still runs", pid)
		}
	}
}
