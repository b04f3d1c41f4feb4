package driver

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/agentkernel/agentkernel-pool/driver/sandbox"
	"github.com/agentkernel/agentkernel-pool/plugin/proto/drivers"
)

// A task's local/, secrets/ and alloc/data are in its sandbox before the
// command starts, and what the command left in local/ and alloc/data is in
// the task's dirs when its exit is reported; an idle task's results are there
// once it is stopped.
func TestTaskFilesInAndOut(t *testing.T) {
	e := newEnv(t)
	e.configure(e.devPool())
	tc := e.taskConfig("agent", map[string]any{"pool": "dev", "command": "/bin/true"}, nil)
	write := func(p, s string, mode os.FileMode) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), mode); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(tc.AllocDir, "agent/local/payload"), "issue 7", 0o644)
	write(filepath.Join(tc.AllocDir, "agent/secrets/token"), "s3cret", 0o600)
	write(filepath.Join(tc.AllocDir, "alloc/data/repo/README"), "cloned", 0o644)
	e.start(tc)
	claimed := filepath.Join(e.dir, e.pool.claimIDs()[0])
	for p, want := range map[string]string{"sandbox/local/payload": "issue 7", "sandbox/secrets/token": "s3cret", "alloc/data/repo/README": "cloned"} {
		if b, err := os.ReadFile(filepath.Join(claimed, p)); err != nil || string(b) != want {
			t.Errorf("sandbox %s: %q %v, want %q", p, b, err, want)
		}
	}
	// The command writes its results, then exits.
	write(filepath.Join(claimed, "sandbox/local/result.txt"), "done", 0o644)
	write(filepath.Join(claimed, "alloc/data/out.json"), "{}", 0o644)
	e.runner.run(runIDOf(tc)).exit <- sandbox.ExitStatus{Code: 0}
	e.wait(tc.Id)
	for p, want := range map[string]string{"agent/local/result.txt": "done", "alloc/data/out.json": "{}", "agent/local/payload": "issue 7"} {
		if b, err := os.ReadFile(filepath.Join(tc.AllocDir, p)); err != nil || string(b) != want {
			t.Errorf("task %s after exit: %q %v, want %q", p, b, err, want)
		}
	}

	idle := e.taskConfig("idle", map[string]any{"pool": "dev"}, nil)
	e.start(idle)
	claimed = filepath.Join(e.dir, e.pool.claimIDs()[1])
	write(filepath.Join(claimed, "sandbox/local/notes.md"), "from exec", 0o644)
	if _, err := e.c.Driver.StopTask(context.Background(), &drivers.StopTaskRequest{TaskId: idle.Id, Timeout: durationpb.New(time.Second)}); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(idle.AllocDir, "idle/local/notes.md")); err != nil || string(b) != "from exec" {
		t.Errorf("idle task's result after stop: %q %v", b, err)
	}
}
