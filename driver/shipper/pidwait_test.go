package shipper

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// Waiting for a shipper's exit ends when the process exits or ctx ends, and
// on Linux it does no periodic work meanwhile (alive is asked only to guard
// against a reused pid).
func TestWaitProcessExit(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	pid := cmd.Process.Pid
	var asked atomic.Int32
	alive := func() bool {
		asked.Add(1)
		st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			return false
		}
		i := strings.LastIndexByte(string(st), ')')
		return !strings.HasPrefix(string(st[i+1:]), " Z")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := waitProcessExit(ctx, pid, alive); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait on a live process: %v, want the deadline", err)
	}
	if runtime.GOOS == "linux" && asked.Load() > 2 {
		t.Errorf("alive asked %d times in 300 ms: the wait polls", asked.Load())
	}

	done := make(chan error, 1)
	go func() { done <- waitProcessExit(context.Background(), pid, alive) }()
	time.Sleep(50 * time.Millisecond)
	_ = cmd.Process.Kill()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("wait after the exit: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("wait did not end after the process exited")
	}
}

// A helper that exits, and is reaped, just after the wait found it alive is
// still seen to exit: its pidfd's one edge must not be lost between the look
// and the wait (the plugin waited for a shipper that had exited so, and so
// never reported its task's exit). alive here is the look: it says the
// process lives, then ends it before the wait can arm.
func TestWaitProcessExitSeesAnExitRightAfterTheLook(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	looked := false
	alive := func() bool {
		if !looked {
			looked = true
			_ = cmd.Process.Kill()
			_ = cmd.Wait()                     // reaped, as the plugin reaps the helpers it starts
			time.Sleep(100 * time.Millisecond) // Go's poller takes the exit's edge meanwhile
		}
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := waitProcessExit(ctx, cmd.Process.Pid, alive); err != nil {
		t.Fatalf("the exit right after the look was missed: %v", err)
	}
}
