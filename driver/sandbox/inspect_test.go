package sandbox

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/agentkernel/agentkernel-pool/driver/allocfs"
)

// What the host sees of a run: its records, and whether its processes live
// (known by the sandbox's alloc dir in their environment, so another process
// on a recorded pid reads as gone); a record the sandbox replaced is a
// refusal of the boundary, not a reading.
func TestInspectReadsTheRunFromTheHost(t *testing.T) {
	r, ref := localSandbox(t)
	ctx := ctxT(t, 10*time.Second)
	if s := Inspect(ref, "sleeper", true); s.Dir || s.Pid != 0 || s.Exited || s.Err != nil {
		t.Fatalf("before the launch: %+v", s)
	}
	if err := r.Launch(ctx, ref, Spec{ID: "sleeper", Command: "/bin/sleep", Args: []string{"30"}}); err != nil {
		t.Fatal(err)
	}
	s := Inspect(ref, "sleeper", true)
	if !s.Dir || !s.Launched || s.Pid == 0 || !s.Alive || s.Exited || s.Err != nil {
		t.Fatalf("running: %+v", s)
	}
	if s := Inspect(ref, "sleeper", false); s.Alive {
		t.Error("Alive looked up where the sandbox's pids are not the host's")
	}
	if err := r.Signal(ctx, ref, "sleeper", "SIGKILL"); err != nil {
		t.Fatal(err)
	}
	waitExited(t, r, ref, "sleeper")
	if s := Inspect(ref, "sleeper", true); !s.Exited || s.Exit.Signal != 9 || s.Alive {
		t.Errorf("killed: %+v", s)
	}

	// The pid record names init, then a live process that is not the sandbox's.
	if err := os.WriteFile(filepath.Join(ref.RunDir("sleeper"), filePid), []byte("1 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(ref.RunDir("sleeper"), fileExit)); err != nil {
		t.Fatal(err)
	}
	if s := Inspect(ref, "sleeper", true); s.Pid != 0 {
		t.Errorf("pid 1 taken from a record: %+v", s)
	}
	if err := os.WriteFile(filepath.Join(ref.RunDir("sleeper"), filePid), []byte("2 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if s := Inspect(ref, "sleeper", true); s.Pid != 2 || s.Alive {
		t.Errorf("a process outside the sandbox reads as the run's: %+v", s)
	}

	mustSymlink(t, "/etc/hostname", filepath.Join(ref.RunDir("sleeper"), fileExit))
	if s := Inspect(ref, "sleeper", true); !errors.Is(s.Err, allocfs.ErrTampered) || s.Exited {
		t.Errorf("a planted exit record: %+v", s)
	}
}
