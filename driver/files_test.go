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

	"github.com/agentkernel/agentkernel-pool/driver/sandbox"
	"github.com/agentkernel/agentkernel-pool/driver/taskfiles"
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

// A write-back stopped by a bound before it began says nothing was written;
// one that failed part way (a tree that grew past a bound while it was
// copied) says what it wrote, not "nothing written".
func TestCopyOutFailedSaysWhatWasWritten(t *testing.T) {
	limit := fmt.Errorf("%w: local holds more than 10 entries", taskfiles.ErrLimit)
	if got := copyOutFailed("0123456789abcdef", taskfiles.Stats{}, limit); !strings.Contains(got, "nothing written") {
		t.Errorf("over a bound before writing: %q, want it to say nothing was written", got)
	}
	partial := fmt.Errorf("copy local back from the sandbox, %w: %w", taskfiles.ErrPartial, limit)
	got := copyOutFailed("0123456789abcdef", taskfiles.Stats{Files: 3, Bytes: 42, Removed: 1}, partial)
	if strings.Contains(got, "nothing written") || !strings.Contains(got, "3 files, 42 bytes, 1 removed") {
		t.Errorf("over a bound part way: %q, want what was written and no \"nothing written\"", got)
	}
}
