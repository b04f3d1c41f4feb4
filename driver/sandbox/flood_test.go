package sandbox

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad/api"
)

// floodSize is what a flooding exec prints on each of stdout and stderr.
const floodSize = 256 << 20

// floodChunk is a MiB of what a hostile shell prints: terminal escapes,
// forged log lines, a newline every 4 KiB.
var floodChunk = func() []byte {
	line := []byte(strings.Repeat("\x1b[2J\x1b]0;owned\x07level=ERROR msg=forged ", 4096/40))
	line = append(line[:4095], '\n')
	return bytes.Repeat(line, 256)
}()

// flood writes n bytes of floodChunk to w.
func flood(w io.Writer, n int64) {
	for ; n > 0; n -= int64(len(floodChunk)) {
		if _, err := w.Write(floodChunk[:min(n, int64(len(floodChunk)))]); err != nil {
			return
		}
	}
}

// syncWriter makes a log buffer safe for the logger's writes.
type syncWriter struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// floodSandbox is a fake allocation whose /bin/sh belongs to the command:
// every exec prints floodSize bytes on stdout and on stderr and exits 1. A
// user's exec (akp-exec) records its pid and waits for its session to end,
// then the hang-up exec floods too.
func floodSandbox(t *testing.T) (*Runner, Ref, *syncWriter) {
	t.Helper()
	root := t.TempDir()
	ref := Ref{Namespace: "default", AllocID: "0123456789abcdef", Task: "sandbox", HostAllocDir: root}
	run := filepath.Join(root, "alloc", runDirName, "run1")
	if err := os.MkdirAll(run, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(run, filePid), []byte("12 13\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	logs := &syncWriter{}
	r := &Runner{Logger: hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Debug})}
	r.exec = func(ctx context.Context, ref Ref, tty bool, cmd []string, stdin io.Reader, stdout, stderr io.Writer, _ <-chan api.TerminalSize) (int, error) {
		if len(cmd) > 5 && cmd[3] == "akp-exec" {
			pid := filepath.Join(ref.RunDir(cmd[4]), "exec-"+cmd[5]+".pid")
			if err := os.WriteFile(pid, []byte("14\n"), 0o644); err != nil {
				return -1, err
			}
			<-ctx.Done()
			return -1, ctx.Err()
		}
		flood(stdout, floodSize)
		flood(stderr, floodSize)
		return 1, nil
	}
	return r, ref, logs
}

// Every exec the plugin runs into a sandbox after its command started
// (signal, launch, prime, the hang-up of a cancelled exec) meets a
// /bin/sh that prints 256 MiB on stdout and stderr: the error and the log
// lines stay a few KiB, with no control character raw, and the plugin
// allocates a few MiB, not what was printed.
func TestExecFloodIsBounded(t *testing.T) {
	for _, op := range []struct {
		name string
		run  func(r *Runner, ref Ref) error
		log  string // what the log says of the flooding exec, if anything
	}{
		{"signal", func(r *Runner, ref Ref) error { return r.Signal(context.Background(), ref, "run1", "SIGTERM") }, ""},
		{"launch", func(r *Runner, ref Ref) error {
			return r.Launch(context.Background(), ref, Spec{ID: "run2", Command: "/bin/true"})
		}, ""},
		{"prime", func(r *Runner, ref Ref) error { return r.Prime(context.Background(), ref) }, ""},
		{"exec hang-up", func(r *Runner, ref Ref) error {
			ctx, cancel := context.WithCancel(context.Background())
			inner := r.exec
			r.exec = func(ctx context.Context, ref Ref, tty bool, cmd []string, stdin io.Reader, stdout, stderr io.Writer, resize <-chan api.TerminalSize) (int, error) {
				if cmd[3] == "akp-exec" {
					defer cancel()
					go func() { // the session ends once the process recorded its pid
						for {
							if _, err := os.Stat(filepath.Join(ref.RunDir("run1"), "exec-"+cmd[5]+".pid")); err == nil {
								cancel()
								return
							}
							runtime.Gosched()
						}
					}()
				}
				return inner(ctx, ref, tty, cmd, stdin, stdout, stderr, resize)
			}
			_, err := r.Exec(ctx, ref, "run1", []string{"true"}, false, nil, io.Discard, io.Discard, nil)
			return err
		}, "could not end exec'd process"},
	} {
		t.Run(op.name, func(t *testing.T) {
			r, ref, logs := floodSandbox(t)
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			err := op.run(r, ref)
			runtime.ReadMemStats(&after)
			if err == nil {
				t.Fatal("no error from a shell that failed")
			}
			if grew := after.TotalAlloc - before.TotalAlloc; grew > 16<<20 {
				t.Errorf("the plugin allocated %d MiB for an exec that printed 2 x %d MiB", grew>>20, floodSize>>20)
			}
			for what, s := range map[string]string{"error": err.Error(), "log": logs.String()} {
				if len(s) > 4<<10 {
					t.Errorf("%s of %d bytes: %.200q", what, len(s), s)
				}
				if strings.ContainsAny(s, "\x1b\x07") || strings.Contains(s, "\nlevel=ERROR") {
					t.Errorf("%s carries the shell's output raw: %.200q", what, s)
				}
			}
			if !strings.Contains(logs.String(), op.log) {
				t.Errorf("the log does not say %q: %.300q", op.log, logs)
			}
		})
	}
}
