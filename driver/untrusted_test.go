package driver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/agentkernel/agentkernel-pool/driver/allocfs"
	"github.com/agentkernel/agentkernel-pool/driver/sandbox"
	"github.com/agentkernel/agentkernel-pool/internal/untrusted"
	"github.com/agentkernel/agentkernel-pool/plugin"
	"github.com/agentkernel/agentkernel-pool/plugin/proto/drivers"
)

// evilName is a file name a hostile command picks: it forges a log line and
// clears the operator's screen.
const evilName = "x\nlevel=ERROR msg=forged\x1b[2J\x1b]0;owned\x07"

// rawControl fails the test when s holds a control character raw or is
// longer than a message may be.
func rawControl(t *testing.T, what, s string) {
	t.Helper()
	if strings.ContainsAny(s, "\n\r\x1b\x07") {
		t.Errorf("%s carries control characters raw: %q", what, s)
	}
	if len(s) > untrusted.MaxMessage {
		t.Errorf("%s is %d bytes", what, len(s))
	}
}

// nextEvent is the next task event, or fails the test.
func nextEvent(t *testing.T, events <-chan plugin.TaskEvent, want string) plugin.TaskEvent {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case ev := <-events:
			if strings.Contains(ev.Message, want) {
				return ev
			}
		case <-timeout:
			t.Fatalf("no event saying %q", want)
		}
	}
}

// A task that failed with an error carrying the sandbox's text, quoted as a
// TamperedError quotes it or raw (what some path let through), reaches its
// event and exit error with no control character raw and a bounded length.
func TestEventsCarryNoRawControlCharacters(t *testing.T) {
	for name, startErr := range map[string]error{
		"tampered": fmt.Errorf("launch command: %w", &allocfs.TamperedError{Alloc: "0123456789abcdef", File: "alloc/" + evilName, Why: "is a FIFO"}),
		"raw":      errors.New("launch command: " + strings.Repeat(evilName, 1000)),
	} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			e.configure(e.devPool())
			events, err := e.drv.TaskEvents(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			e.runner.startErr = startErr
			tc := e.taskConfig("agent", map[string]any{"pool": "dev", "command": "x"}, nil)
			e.start(tc)
			r := e.wait(tc.Id)
			rawControl(t, "exit error", r.Err)
			rawControl(t, "event", nextEvent(t, events, "Launch command").Message)
		})
	}
}

// The command leaves a tree the copy back refuses (nested deeper than the
// write-back goes), named to forge log lines: the event saying the results
// were not copied names it quoted, with no control character raw.
func TestCopyBackEventQuotesNames(t *testing.T) {
	e := newEnv(t)
	e.configure(e.devPool())
	events, err := e.drv.TaskEvents(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	tc := e.taskConfig("agent", map[string]any{"pool": "dev", "command": "/bin/true"}, nil)
	e.start(tc)
	deep := filepath.Join(e.dir, e.pool.claimIDs()[0], "sandbox", "local", strings.Repeat("\x1b[2J\n/", 200)+evilName)
	if err := os.MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	e.runner.run(runIDOf(tc)).exit <- sandbox.ExitStatus{Code: 0}
	e.wait(tc.Id)
	rawControl(t, "event", nextEvent(t, events, "Results not copied back").Message)
	if _, err := e.c.Driver.DestroyTask(context.Background(), &drivers.DestroyTaskRequest{TaskId: tc.Id, Force: true}); err != nil {
		t.Fatal(err)
	}
}

// A script check whose command prints 256 MiB on stdout and stderr: Nomad
// gets the last 4 KiB of each, as its own drivers keep of a check's output,
// and the plugin allocates a few MiB, not what was printed.
func TestExecTaskKeepsWhatNomadKeeps(t *testing.T) {
	e := newEnv(t)
	e.configure(e.devPool())
	tc := e.taskConfig("agent", map[string]any{"pool": "dev", "command": "x"}, nil)
	e.start(tc)
	chunk := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	e.runner.execOut = func(stdout, stderr io.Writer) {
		for i := range 256 {
			chunk[len(chunk)-1] = byte('A' + i%26) // marks the last chunk
			_, _ = stdout.Write(chunk)
			_, _ = stderr.Write(chunk)
		}
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	res, err := e.drv.ExecTask(context.Background(), tc.Id, []string{"check"})
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	want := chunk[len(chunk)-checkOutput:]
	if !bytes.Equal(res.Stdout, want) || !bytes.Equal(res.Stderr, want) {
		t.Errorf("check output: %d and %d bytes ending %q, want the last %d bytes", len(res.Stdout), len(res.Stderr), res.Stdout[max(0, len(res.Stdout)-4):], checkOutput)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 16<<20 {
		t.Errorf("the plugin allocated %d MiB for a check that printed 512 MiB", grew>>20)
	}
}
