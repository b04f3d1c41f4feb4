package driver

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/agentkernel/agentkernel-pool/driver/sandbox"
	"github.com/agentkernel/agentkernel-pool/plugin/proto/drivers"
)

// A task restarted (Nomad starts it again under a new task id, same task dir
// and log FIFOs) ships each attempt's output from its start: the log holds
// every attempt's, in order, and each attempt's exit code is its own. Offsets
// shared by the attempts had the second skip as many bytes as the first had
// shipped.
func TestRestartedTaskShipsEveryAttempt(t *testing.T) {
	e := newEnv(t)
	e.configure(e.devPool())
	first := e.taskConfig("agent", map[string]any{"pool": "dev", "command": "x"}, nil)
	var want string
	for i, out := range []string{"first\n", "again\n", "third\n"} {
		tc := proto.Clone(first).(*drivers.TaskConfig)
		tc.Id = strings.TrimSuffix(first.Id, "11111111") + strings.Repeat(string(rune('a'+i)), 8)
		tc.Env = map[string]string{"OUT": out}
		e.start(tc)
		e.runner.run(runIDOf(tc)).exit <- sandbox.ExitStatus{Code: 10 + i}
		if r := e.wait(tc.Id); r.Result.GetExitCode() != int32(10+i) {
			t.Errorf("attempt %d: exit code %d, want %d", i+1, r.Result.GetExitCode(), 10+i)
		}
		if _, err := e.c.Driver.DestroyTask(context.Background(), &drivers.DestroyTaskRequest{TaskId: tc.Id, Force: true}); err != nil {
			t.Fatal(err)
		}
		want += out
		waitFile(t, tc.StdoutPath, want)
	}
	// Each run's files go with it.
	left, _ := filepath.Glob(filepath.Join(e.dir, "alloc-agent", "agent", "private", ".agentkernel-*offsets*"))
	if len(left) > 0 {
		t.Errorf("offsets of destroyed runs left: %v", left)
	}
}

// When a task's sandbox dies under its command, nothing holds the task's log
// FIFO open for writing any more by the time its exit is reported: Nomad's
// logmon opens the FIFOs for the next attempt only once it has read the end of
// this one's, and otherwise keeps readers that no later output reaches.
func TestSandboxDeathEndsTheLogStreamBeforeTheExit(t *testing.T) {
	e := newEnv(t)
	e.configure(e.devPool())
	tc := e.taskConfig("agent", map[string]any{"pool": "dev", "command": "x"}, map[string]string{"OUT": "hi\n"})
	fifo := filepath.Join(filepath.Dir(tc.StdoutPath), "stdout.fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	tc.StdoutPath = fifo
	fd, err := syscall.Open(fifo, syscall.O_RDONLY|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0) // logmon's reader
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	st := e.state(e.start(tc))
	buf := make([]byte, 64)
	var got string
	for deadline := time.Now().Add(5 * time.Second); got != "hi\n"; time.Sleep(10 * time.Millisecond) {
		if n, err := syscall.Read(fd, buf); err == nil && n > 0 {
			got += string(buf[:n])
		}
		if time.Now().After(deadline) {
			t.Fatalf("log read %q, want %q", got, "hi\n")
		}
	}
	e.runner.kill(st.Claim.AllocID)
	r := e.wait(tc.Id)
	if r.Result.GetExitCode() != 1 || !strings.Contains(r.Err, "stopped from outside") {
		t.Errorf("want a failure saying the sandbox was stopped from outside, got %+v", r)
	}
	n, err := syscall.Read(fd, buf)
	if errors.Is(err, syscall.EAGAIN) {
		t.Fatal("the log FIFO still has a writer after the exit was reported")
	}
	if err != nil || n != 0 {
		t.Errorf("read after the exit: %d bytes %q, %v; want end of file", n, buf[:max(n, 0)], err)
	}
}
