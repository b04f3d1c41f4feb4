package nomadtest

import (
	"context"
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
