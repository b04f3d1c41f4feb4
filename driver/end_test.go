package driver

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/agentkernel/agentkernel-pool/driver/nsmount"
	"github.com/agentkernel/agentkernel-pool/driver/sandbox"
	"github.com/agentkernel/agentkernel-pool/plugin/proto/drivers"
)

// The sandbox's processes are ended before anything of the exit: before the
// copy back and before the exit is reported. Ending them ends the sandbox
// allocation's own task, which Nomad then reports; that is not taken for the
// sandbox stopped from outside: the exit is the command's, and its results
// are copied back.
func TestSandboxEndedBeforeExitReported(t *testing.T) {
	e := newEnv(t)
	e.configure(e.devPool())
	tc := e.taskConfig("agent", map[string]any{"pool": "dev", "command": "/bin/true"}, nil)
	e.start(tc)
	id := e.pool.claimIDs()[0]
	result := filepath.Join(e.dir, id, "alloc", "data", "result.txt")
	if err := os.WriteFile(result, []byte("done"), 0o644); err != nil {
		t.Fatal(err)
	}
	var at string // what was done when End ran
	e.runner.onEnd = func(ref sandbox.Ref, _ string) (int, error) {
		ins, err := e.c.Driver.InspectTask(context.Background(), &drivers.InspectTaskRequest{TaskId: tc.Id})
		_, statErr := os.Stat(filepath.Join(tc.AllocDir, "alloc", "data", "result.txt"))
		at = fmt.Sprintf("task state %v (%v), results in the task's dir: %v", ins.GetTask().GetState(), err, statErr == nil)
		// The warm task's process dies with the rest: Nomad says the
		// sandbox allocation failed while the plugin is still at work.
		e.runner.kill(ref.AllocID)
		time.Sleep(50 * time.Millisecond) // the watcher of the sandbox hears of it
		return 4, nil
	}
	e.runner.run(runIDOf(tc)).exit <- sandbox.ExitStatus{Code: 3}
	r := e.wait(tc.Id)
	if want := "task state RUNNING (<nil>), results in the task's dir: false"; at != want {
		t.Errorf("when the sandbox's processes were ended: %s; want %s", at, want)
	}
	if r.Result.GetExitCode() != 3 || r.Err != "" {
		t.Errorf("exit code %d, error %q; want the command's 3 and no error", r.Result.GetExitCode(), r.Err)
	}
	if b, err := os.ReadFile(filepath.Join(tc.AllocDir, "alloc", "data", "result.txt")); err != nil || string(b) != "done" {
		t.Errorf("results after the exit: %q %v", b, err)
	}
}

// Processes the host cannot end (left after every round of SIGKILL) fail the
// task loudly: an error in its exit result, an event, nothing copied back
// from a tree that still changes, and its sandbox released at once.
func TestSandboxNotEndedFailsLoudly(t *testing.T) {
	e := newEnv(t)
	e.configure(e.devPool())
	evctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events, err := e.drv.TaskEvents(evctx)
	if err != nil {
		t.Fatal(err)
	}
	tc := e.taskConfig("agent", map[string]any{"pool": "dev", "command": "/bin/true"}, nil)
	e.start(tc)
	id := e.pool.claimIDs()[0]
	if err := os.WriteFile(filepath.Join(e.dir, id, "alloc", "data", "result.txt"), []byte("done"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.runner.onEnd = func(sandbox.Ref, string) (int, error) {
		return 100, fmt.Errorf("end the processes of sandbox %s: %w: 3 still there after 8 rounds", short(id), nsmount.ErrSurvivors)
	}
	e.runner.run(runIDOf(tc)).exit <- sandbox.ExitStatus{Code: 0}
	r := e.wait(tc.Id)
	if r.Result.GetExitCode() != 1 || !strings.Contains(r.Err, "could not all be ended") || !strings.Contains(r.Err, "survived SIGKILL") {
		t.Errorf("exit code %d, error %q; want 1 and the survivors named", r.Result.GetExitCode(), r.Err)
	}
	if _, err := os.Stat(filepath.Join(tc.AllocDir, "alloc", "data", "result.txt")); !os.IsNotExist(err) {
		t.Errorf("results copied back from a sandbox still running (%v)", err)
	}
	if rel := e.pool.releasedIDs(); len(rel) != 1 || rel[0] != id {
		t.Errorf("released %v before Destroy, want %s", rel, id)
	}
	timeout := time.After(5 * time.Second)
	for {
		select {
		case ev := <-events:
			if strings.Contains(ev.Message, "could not all be ended") {
				return
			}
		case <-timeout:
			t.Fatal("no task event says the sandbox's processes could not be ended")
		}
	}
}

// An idle task (no command) holds its sandbox for execs; what they left
// running is ended when the task stops, before its results are copied back.
func TestIdleSandboxEndedBeforeCopyBack(t *testing.T) {
	e := newEnv(t)
	e.configure(e.devPool())
	idle := e.taskConfig("idle", map[string]any{"pool": "dev"}, nil)
	e.start(idle)
	id := e.pool.claimIDs()[0]
	if err := os.WriteFile(filepath.Join(e.dir, id, "sandbox", "local", "notes.md"), []byte("from exec"), 0o644); err != nil {
		t.Fatal(err)
	}
	copied := true
	e.runner.onEnd = func(sandbox.Ref, string) (int, error) {
		_, err := os.Stat(filepath.Join(idle.AllocDir, "idle", "local", "notes.md"))
		copied = err == nil
		return 1, nil
	}
	if _, err := e.c.Driver.StopTask(context.Background(), &drivers.StopTaskRequest{TaskId: idle.Id, Timeout: durationpb.New(time.Second)}); err != nil {
		t.Fatal(err)
	}
	if copied || len(e.runner.ended) != 1 {
		t.Errorf("sandboxes ended %v; results copied back before: %v", e.runner.ended, copied)
	}
	if b, err := os.ReadFile(filepath.Join(idle.AllocDir, "idle", "local", "notes.md")); err != nil || string(b) != "from exec" {
		t.Errorf("idle task's result after stop: %q %v", b, err)
	}
}
