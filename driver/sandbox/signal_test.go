package sandbox

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestParseSignal(t *testing.T) {
	for in, want := range map[string]int{
		"SIGTERM": 15, "sigterm": 15, "TERM": 15, "term": 15, " SIGINT ": 2, "SIGHUP": 1,
		"SIGKILL": 9, "SIGUSR1": 10, "usr2": 12, "SIGQUIT": 3, "SIGWINCH": 28, "15": 15,
		"9": 9, "SIG9": 9, "SIGRTMIN": 34, "SIGRTMIN+3": 37, "RTMAX": 64, "SIGRTMAX-2": 62, "64": 64,
	} {
		got, err := ParseSignal(in)
		if err != nil || got != want {
			t.Errorf("ParseSignal(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "SIG", "SIGFOO", "0", "65", "-1", "SIGRTMIN-1", "SIGRTMAX+1", "RTMIN+31", "RTMIN+x", "1.5"} {
		if n, err := ParseSignal(in); err == nil {
			t.Errorf("ParseSignal(%q) = %d, want error", in, n)
		}
	}
}

func TestSignalDeliversToCommand(t *testing.T) {
	r, ref := localSandbox(t)
	ctx := ctxT(t, 10*time.Second)
	if err := r.Launch(ctx, ref, Spec{ID: "sleeper", Command: "/bin/sleep", Args: []string{"30"}}); err != nil {
		t.Fatal(err)
	}
	if err := r.Signal(ctx, ref, "sleeper", "sigterm"); err != nil {
		t.Fatal(err)
	}
	if st := waitExited(t, r, ref, "sleeper"); st != (ExitStatus{Code: 143, Signal: 15}) {
		t.Errorf("status %+v, want SIGTERM", st)
	}
	// Already exited: no error, and no exec either.
	r.exec = nil
	if err := r.Signal(ctx, ref, "sleeper", "SIGKILL"); err != nil {
		t.Errorf("signal after exit: %v", err)
	}
}

func TestSignalTrappedIsNotExit(t *testing.T) {
	r, ref := localSandbox(t)
	ctx := ctxT(t, 10*time.Second)
	script := `trap 'echo got-usr1' USR1; echo ready; while :; do sleep 0.05; done`
	if err := r.Launch(ctx, ref, Spec{ID: "trap", Command: "/bin/sh", Args: []string{"-c", script}}); err != nil {
		t.Fatal(err)
	}
	waitFile(t, filepath.Join(ref.RunDir("trap"), fileStdout), "ready")
	if err := r.Signal(ctx, ref, "trap", "USR1"); err != nil {
		t.Fatal(err)
	}
	waitFile(t, filepath.Join(ref.RunDir("trap"), fileStdout), "got-usr1")
	if _, exited, _ := r.Status(ref, "trap"); exited {
		t.Fatal("trapped signal ended the run")
	}
	if err := r.Signal(ctx, ref, "trap", "9"); err != nil {
		t.Fatal(err)
	}
	if st := waitExited(t, r, ref, "trap"); st.Signal != 9 {
		t.Errorf("status %+v, want SIGKILL", st)
	}
}

func TestSignalErrors(t *testing.T) {
	r, ref := localSandbox(t)
	ctx := ctxT(t, 5*time.Second)
	if err := r.Signal(ctx, ref, "none", "TERM"); err == nil {
		t.Error("signal to unknown run: no error")
	}
	if err := r.Signal(ctx, ref, "none", "SIGNOPE"); err == nil || !strings.Contains(err.Error(), "SIGNOPE") {
		t.Errorf("bad signal name: %v", err)
	}
}

func TestExecStdinExitCodeAndEnv(t *testing.T) {
	r, ref := localSandbox(t)
	ctx := ctxT(t, 10*time.Second)
	if err := r.Launch(ctx, ref, Spec{ID: "x", Command: "/bin/sleep", Args: []string{"5"}, Env: map[string]string{"FOO": "bar baz"}}); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	code, err := r.Exec(ctx, ref, "x", []string{"/bin/sh", "-c", `cat; echo "$FOO/$SANDBOX_OWN"; echo e >&2; exit 7`}, false,
		strings.NewReader("from stdin\n"), &out, &errOut, nil)
	if err != nil || code != 7 {
		t.Fatalf("exec: code %d err %v", code, err)
	}
	if out.String() != "from stdin\nbar baz/warm\n" || errOut.String() != "e\n" {
		t.Errorf("stdout %q stderr %q", out.String(), errOut.String())
	}
	if left, _ := filepath.Glob(filepath.Join(ref.RunDir("x"), "exec-*.pid")); len(left) != 0 {
		t.Errorf("exec pid files left: %v", left)
	}
}

func TestExecCancelEndsRemoteProcess(t *testing.T) {
	r, ref := localSandbox(t)
	if err := r.Launch(ctxT(t, 10*time.Second), ref, Spec{ID: "c"}); err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(t.TempDir(), "pid")
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		waitFile(t, marker, "\n")
		cancel()
	}()
	stdin, w, _ := os.Pipe() // never closed until the end: an interactive user
	defer w.Close()
	_, err := r.Exec(ctx, ref, "c", []string{"/bin/sh", "-c", `echo $$ >` + marker + `; exec sleep 30`}, false, stdin, &bytes.Buffer{}, &bytes.Buffer{}, nil)
	if err == nil || ctx.Err() == nil {
		t.Fatalf("exec returned %v before cancel", err)
	}
	b, _ := os.ReadFile(marker)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	deadline := time.Now().Add(5 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("exec'd process %d still alive after cancel", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func waitFile(t *testing.T, path, substr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(path); err == nil && strings.Contains(string(b), substr) {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("%s never contained %q", path, substr)
}

func TestSignalKillEndsTheCommandsChildren(t *testing.T) {
	r, ref := localSandbox(t)
	ctx := ctxT(t, 10*time.Second)
	if err := r.Launch(ctx, ref, Spec{ID: "tree", Command: "/bin/sh", Args: []string{"-c", `sleep 30 & echo "$!"; wait`}}); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(ref.RunDir("tree"), fileStdout)
	waitFile(t, out, "\n")
	b, _ := os.ReadFile(out)
	child, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if err := r.Signal(ctx, ref, "tree", "SIGKILL"); err != nil {
		t.Fatal(err)
	}
	if st := waitExited(t, r, ref, "tree"); st.Signal != 9 {
		t.Errorf("status %+v", st)
	}
	deadline := time.Now().Add(5 * time.Second)
	for alive(child) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if alive(child) {
		t.Errorf("child %d of the killed command lives on", child)
	}
}

// What a command leaves behind in its process group (a background child)
// is killed by Reap once the run is over; a run with nothing left is a no-op.
func TestReapKillsLeftovers(t *testing.T) {
	r, ref := localSandbox(t)
	childFile := filepath.Join(t.TempDir(), "child")
	script := `sleep 600 & echo $! > ` + childFile + `; exit 0`
	if err := r.Launch(ctxT(t, 10*time.Second), ref, Spec{ID: "leaves", Command: "/bin/sh", Args: []string{"-c", script}}); err != nil {
		t.Fatal(err)
	}
	follow(t, r, ref, "leaves")
	b, err := os.ReadFile(childFile)
	if err != nil {
		t.Fatal(err)
	}
	child, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if child <= 1 || syscall.Kill(child, 0) != nil {
		t.Fatalf("background child %d not running after the command exited", child)
	}
	t.Cleanup(func() { _ = syscall.Kill(child, syscall.SIGKILL) })
	if n := Reap(ref, "leaves"); n != 1 {
		t.Errorf("Reap found %d leftovers, want 1", n)
	}
	deadline := time.Now().Add(5 * time.Second)
	for syscall.Kill(child, 0) == nil && !zombie(child) {
		if time.Now().After(deadline) {
			t.Fatalf("background child %d still alive after Reap", child)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := Reap(ref, "leaves"); n != 0 {
		t.Errorf("second Reap found %d, want 0", n)
	}
}

// zombie reports whether pid has exited but is not yet reaped.
func zombie(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i > 0 && strings.HasPrefix(string(b[i+1:]), " Z")
}
