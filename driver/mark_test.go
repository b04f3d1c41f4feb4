package driver

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agentkernel/agentkernel-pool/driver/sandbox"
	"github.com/agentkernel/agentkernel-pool/plugin/proto/drivers"
	"github.com/agentkernel/agentkernel-pool/pool"
)

// A sandbox handed to a task stays in use for a restarted plugin whatever its
// command does inside: it renames, or removes, the alloc/.agentkernel dir
// that holds its run, and Prepare's check still reports it in use. A sandbox
// never handed out passes; one whose host dir cannot be read is retired.
func TestHandedOutSandboxStaysInUse(t *testing.T) {
	for _, hide := range []string{"rename", "remove"} {
		t.Run(hide, func(t *testing.T) {
			e := newEnv(t)
			e.configure(e.devPool())
			tc := e.taskConfig("agent", map[string]any{"pool": "dev", "command": "/bin/sleep"}, nil)
			e.start(tc)
			id := e.pool.claimIDs()[0]
			ref := sandbox.Ref{AllocID: id, Task: "sandbox", HostAllocDir: filepath.Join(e.dir, id)}
			if err := handOutCheck(ref); !errors.Is(err, pool.ErrInUse) {
				t.Fatalf("check of the sandbox running the task: %v, want ErrInUse", err)
			}
			// The command, as the sandbox's user, hides its runs.
			runs := filepath.Join(ref.HostAllocDir, "alloc", ".agentkernel")
			var err error
			if hide == "rename" {
				err = os.Rename(runs, filepath.Join(ref.HostAllocDir, "alloc", "elsewhere"))
			} else {
				err = os.RemoveAll(runs)
			}
			if err != nil {
				t.Fatal(err)
			}
			if used, err := ref.Used(); err != nil || used {
				t.Fatalf("Used() = %v, %v after the command hid its runs: the test would prove nothing", used, err)
			}
			err = handOutCheck(ref)
			if !errors.Is(err, pool.ErrInUse) || !strings.Contains(err.Error(), "handed out") {
				t.Errorf("check after the command hid its runs: %v, want ErrInUse (handed out)", err)
			}
		})
	}

	root := t.TempDir()
	fresh := sandbox.Ref{AllocID: "fresh", Task: "sandbox", HostAllocDir: filepath.Join(root, "fresh")}
	if err := os.MkdirAll(filepath.Join(fresh.HostAllocDir, "alloc"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := handOutCheck(fresh); err != nil {
		t.Errorf("check of a sandbox never handed out: %v", err)
	}
	gone := sandbox.Ref{AllocID: "gone", Task: "sandbox", HostAllocDir: filepath.Join(root, "gone")}
	if err := handOutCheck(gone); !errors.Is(err, pool.ErrUnpreparable) {
		t.Errorf("check of a sandbox whose host dir is missing: %v, want ErrUnpreparable (retired)", err)
	}
}

// Two tasks never share a sandbox, even when the pool hands one out twice (a
// bug, or a second plugin on the node): the second start fails on the
// hand-out mark before any of its files reach the sandbox, and is released.
func TestSandboxHandedOutOnlyOnce(t *testing.T) {
	e := newEnv(t)
	e.configure(e.devPool())
	first := e.taskConfig("first", map[string]any{"pool": "dev", "command": "/bin/sleep"}, nil)
	e.start(first)
	id := e.pool.claimIDs()[0]

	second := e.taskConfig("second", map[string]any{"pool": "dev", "command": "/bin/sleep"}, nil)
	if err := os.MkdirAll(filepath.Join(second.AllocDir, "second", "local"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(second.AllocDir, "second", "local", "secret-plan"), []byte("second's"), 0o644); err != nil {
		t.Fatal(err)
	}
	e.pool.mu.Lock()
	e.pool.next-- // the next claim hands out the first sandbox again
	e.pool.mu.Unlock()
	_, err := e.c.Driver.StartTask(context.Background(), &drivers.StartTaskRequest{Task: second})
	if err == nil || !strings.Contains(err.Error(), "handed out before") || !recoverable(err) {
		t.Fatalf("second start in the same sandbox: %v, want a recoverable error naming the hand-out mark", err)
	}
	if _, err := os.Stat(filepath.Join(e.dir, id, "sandbox", "local", "secret-plan")); !os.IsNotExist(err) {
		t.Errorf("the second task's file reached the first task's sandbox (%v)", err)
	}
	if rel := e.pool.releasedIDs(); len(rel) != 1 || rel[0] != id {
		t.Errorf("released %v after the failed start, want %s", rel, id)
	}
}
