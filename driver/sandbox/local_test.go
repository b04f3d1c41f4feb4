package sandbox

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad/api"
)

// localSandbox is a fake allocation in a temp dir whose exec transport runs
// commands on this machine the way raw_exec does: NOMAD_ALLOC_DIR and
// NOMAD_SECRETS_DIR are host paths, stdio are pipes that Wait drains, and, like
// Nomad, a cancelled session does not kill its process.
func localSandbox(t testing.TB) (*Runner, Ref) {
	t.Helper()
	return localSandboxShell(t, nil)
}

// localSandboxShell is localSandbox with another shell in the place of /bin/sh.
func localSandboxShell(t testing.TB, shell []string) (*Runner, Ref) {
	t.Helper()
	root := t.TempDir()
	ref := Ref{Namespace: "default", AllocID: "0123456789abcdef", Task: "sandbox", HostAllocDir: root}
	for _, d := range []string{filepath.Join(root, "alloc"), filepath.Join(root, "sandbox", "secrets")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	r := &Runner{Logger: hclog.NewNullLogger(), PollInterval: 10 * time.Millisecond}
	r.exec = func(ctx context.Context, ref Ref, tty bool, cmd []string, stdin io.Reader, stdout, stderr io.Writer, _ <-chan api.TerminalSize) (int, error) {
		if shell != nil && cmd[0] == "/bin/sh" {
			cmd = append(append([]string{}, shell...), cmd[1:]...)
		}
		c := exec.Command(cmd[0], cmd[1:]...)
		c.Env = append(os.Environ(),
			"NOMAD_ALLOC_DIR="+filepath.Join(root, "alloc"),
			"NOMAD_SECRETS_DIR="+filepath.Join(root, "sandbox", "secrets"),
			"SANDBOX_OWN=warm")
		// Like Nomad's exec API, the session ends when the process does,
		// whether or not the caller is done writing stdin.
		in, err := c.StdinPipe()
		if err != nil {
			return -1, err
		}
		c.Stdout, c.Stderr = stdout, stderr
		if err := c.Start(); err != nil {
			return -1, err
		}
		go func() {
			_, _ = io.Copy(in, stdin)
			in.Close()
		}()
		done := make(chan error, 1)
		go func() { done <- c.Wait() }()
		select {
		case err := <-done:
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return ee.ExitCode(), nil
			}
			if err != nil {
				return -1, err
			}
			return 0, nil
		case <-ctx.Done():
			return -1, ctx.Err()
		}
	}
	t.Cleanup(func() { killRuns(ref) })
	return r, ref
}

// killRuns ends what a test left running in its fake sandbox: every process
// whose environment puts the alloc dir in it.
func killRuns(ref Ref) {
	for _, pid := range sandboxProcs(ref) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}

// sandboxProcs lists the processes started in a fake sandbox, with a marker in
// their command line when one is given.
func sandboxProcs(ref Ref, marker ...string) []int {
	want := []byte("NOMAD_ALLOC_DIR=" + filepath.Join(ref.HostAllocDir, "alloc") + "\x00")
	var pids []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil || !bytes.Contains(env, want) {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if len(marker) > 0 && !bytes.Contains(cmdline, []byte(marker[0])) {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// follow runs Follow to the end and returns stdout, stderr and the status.
func follow(t *testing.T, r *Runner, ref Ref, runID string) (string, string, ExitStatus) {
	t.Helper()
	var out, errb strings.Builder
	st, err := r.Follow(ctxT(t, 20*time.Second), ref, runID, Offsets{}, &out, &errb, nil)
	if err != nil {
		t.Fatalf("follow %s: %v", runID, err)
	}
	return out.String(), errb.String(), st
}

// execOutput runs cmd without a tty or stdin and returns its output and exit code.
func execOutput(ctx context.Context, r *Runner, ref Ref, runID string, cmd []string) (stdout, stderr []byte, code int, err error) {
	var o, e bytes.Buffer
	code, err = r.Exec(ctx, ref, runID, cmd, false, bytes.NewReader(nil), &o, &e, nil)
	return o.Bytes(), e.Bytes(), code, err
}
