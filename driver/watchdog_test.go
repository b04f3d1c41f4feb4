package driver

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentkernel/agentkernel-pool/driver/sandbox"
	"github.com/agentkernel/agentkernel-pool/plugin"
	"github.com/agentkernel/agentkernel-pool/plugin/proto/drivers"
)

// watchdogEnv is a driver whose watchdog looks every 20 ms and reports after
// grace, with its task events collected.
func watchdogEnv(t *testing.T, grace time.Duration) (*env, <-chan plugin.TaskEvent) {
	t.Helper()
	e := newEnv(t)
	e.drv.watchdogEvery, e.drv.watchdogGrace = 20*time.Millisecond, grace
	e.configure(e.devPool())
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	events, err := e.drv.TaskEvents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return e, events
}

// startNamed starts a task with a command; each name gets its own run id.
func (e *env) startNamed(name string, n int) (*drivers.TaskConfig, driverState) {
	e.t.Helper()
	tc := e.taskConfig(name, map[string]any{"pool": "dev", "command": "x"}, nil)
	tc.Id = strings.Replace(tc.Id, "11111111", strconv.Itoa(11111111*n), 1)
	return tc, e.state(e.start(tc))
}

func writeRecord(t *testing.T, st driverState, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(st.ref().RunDir(st.RunID), name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// watchdogEvent waits for the watchdog's event of a task.
func watchdogEvent(t *testing.T, events <-chan plugin.TaskEvent, taskID string) string {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case ev := <-events:
			if ev.TaskID == taskID && strings.HasPrefix(ev.Message, "Watchdog:") {
				return ev.Message
			}
		case <-timeout:
			t.Fatalf("no watchdog event for task %s", taskID)
		}
	}
}

// A task whose command exited but whose exit the watcher never reports (its
// follow never returns, as if the shipper had missed the exit) is reported
// by the watchdog with the recorded exit code, in an event naming the step
// that failed, once the sandbox's processes are ended (as the watcher would). A running task beside it is never touched, and its exit is
// its watcher's to report.
func TestWatchdogReportsAnExitNobodyReported(t *testing.T) {
	e, events := watchdogEnv(t, 300*time.Millisecond)
	stuck, stuckSt := e.startNamed("stuck", 1)
	healthy, _ := e.startNamed("healthy", 2)
	writeRecord(t, stuckSt, "exit", "7\n") // the command exited 7; Follow never sees it

	r := e.wait(stuck.Id)
	if r.Result.GetExitCode() != 7 {
		t.Errorf("exit code %d, want the recorded 7", r.Result.GetExitCode())
	}
	e.runner.mu.Lock()
	ended := slices.Contains(e.runner.ended, stuckSt.Claim.AllocID)
	e.runner.mu.Unlock()
	if !ended {
		t.Error("the watchdog reported the exit without ending the sandbox's processes")
	}
	msg := watchdogEvent(t, events, stuck.Id)
	if !strings.Contains(msg, "exited (exit code 7)") || !strings.Contains(msg, stepShip+" never reported it") {
		t.Errorf("event %q does not say the command exited 7 and the shipper did not report it", msg)
	}

	time.Sleep(20 * e.drv.watchdogEvery) // many passes of the watchdog over the running task
	if h, _ := e.drv.tasks.get(healthy.Id); h == nil {
		t.Fatal("healthy task not tracked")
	} else if r, _ := h.result(); r != nil {
		t.Fatalf("the watchdog ended a running task: %+v", r)
	}
	e.runner.run(runIDOf(healthy)).exit <- sandbox.ExitStatus{Code: 3}
	if r := e.wait(healthy.Id); r.Result.GetExitCode() != 3 {
		t.Errorf("healthy task: exit code %d, want 3", r.Result.GetExitCode())
	}
}

// Where the sandbox's pids are the host's (raw_exec), a command whose
// processes are gone without an exit record (its supervisor killed) is
// reported too; one whose process lives is not.
func TestWatchdogReportsACommandWhoseProcessesAreGone(t *testing.T) {
	e, events := watchdogEnv(t, 300*time.Millisecond)
	e.runner.hostDir = e.dir
	gone, goneSt := e.startNamed("gone", 1)
	alive, aliveSt := e.startNamed("alive", 2)
	if goneSt.FilesWay != filesDirect {
		t.Fatalf("files way %q, want %q (a sandbox sharing the host)", goneSt.FilesWay, filesDirect)
	}
	dead := exec.Command("/bin/true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	pid := strconv.Itoa(dead.Process.Pid)
	writeRecord(t, goneSt, "pid", pid+" "+pid+"\n")
	// A live process of the other sandbox: it carries its alloc dir, as a
	// run's processes do.
	sleeper := exec.Command("/bin/sleep", "60")
	sleeper.Env = []string{"NOMAD_ALLOC_DIR=" + filepath.Join(aliveSt.HostAllocDir, "alloc")}
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sleeper.Process.Kill(); _ = sleeper.Wait() })
	spid := strconv.Itoa(sleeper.Process.Pid)
	writeRecord(t, aliveSt, "pid", spid+" "+spid+"\n")

	r := e.wait(gone.Id)
	if r.Result.GetExitCode() != 1 || !strings.Contains(r.Err, "recorded no exit status") {
		t.Errorf("want exit code 1 saying no exit status was recorded, got %+v", r)
	}
	if msg := watchdogEvent(t, events, gone.Id); !strings.Contains(msg, "is gone without an exit record") {
		t.Errorf("event %q does not say the command is gone", msg)
	}
	time.Sleep(20 * e.drv.watchdogEvery)
	if h, _ := e.drv.tasks.get(alive.Id); h == nil {
		t.Fatal("task not tracked")
	} else if r, _ := h.result(); r != nil {
		t.Fatalf("the watchdog ended a task whose process lives: %+v", r)
	}
}

// A command that exited while its output is still being shipped (the
// shipper saves its offsets as output moves) is left to its shipper; once
// output stops moving, the watchdog reports it.
func TestWatchdogWaitsWhileOutputMoves(t *testing.T) {
	// A grace well above the 50 ms between saves: under -race on a loaded
	// 2-core machine this loop stalled past 300 ms, and output that moved
	// looked still.
	e, events := watchdogEnv(t, 1500*time.Millisecond)
	tc, st := e.startNamed("draining", 1)
	writeRecord(t, st, "exit", "0\n")
	moving := time.Now().Add(3 * e.drv.watchdogGrace)
	for time.Now().Before(moving) { // a shipper draining: offsets saved every 50 ms
		if err := os.WriteFile(st.OffsetsPath, []byte(`{"stdout":1}`), 0o600); err != nil {
			t.Fatal(err)
		}
		if h, _ := e.drv.tasks.get(tc.Id); h == nil {
			t.Fatal("task not tracked")
		} else if r, _ := h.result(); r != nil {
			t.Fatalf("reported while its output moved: %+v", r)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if r := e.wait(tc.Id); r.Result.GetExitCode() != 0 {
		t.Errorf("exit code %d, want 0", r.Result.GetExitCode())
	}
	watchdogEvent(t, events, tc.Id)
}
