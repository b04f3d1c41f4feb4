package sandbox

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"
)

// countExecs counts the exec round trips a runner makes.
func countExecs(r *Runner) *atomic.Int32 {
	var n atomic.Int32
	inner := r.exec
	r.exec = func(ctx context.Context, ref Ref, tty bool, cmd []string, stdin io.Reader, stdout, stderr io.Writer, resize <-chan api.TerminalSize) (int, error) {
		n.Add(1)
		return inner(ctx, ref, tty, cmd, stdin, stdout, stderr, resize)
	}
	return &n
}

func TestPrimedLaunchNeedsNoExec(t *testing.T) {
	r, ref := localSandbox(t)
	execs := countExecs(r)
	ctx := ctxT(t, 10*time.Second)
	if err := r.Prime(ctx, ref); err != nil {
		t.Fatal(err)
	}
	if err := r.Prime(ctx, ref); err != nil || execs.Load() != 1 {
		t.Fatalf("second prime: %v, %d execs in all, want 1", err, execs.Load())
	}
	if !primed(r, ref.AllocID) {
		t.Fatal("not primed")
	}
	env := map[string]string{"TOKEN": "it's a \"secret\"\n$x"}
	spec := Spec{ID: "fast", Command: "/bin/sh", Args: []string{"-c", `printf '%s|' "$TOKEN" "$@"; exit 4`, "sh", "a b", "'c'"}, Env: env}
	if err := r.Launch(ctx, ref, spec); err != nil {
		t.Fatal(err)
	}
	if execs.Load() != 1 {
		t.Errorf("primed launch made %d execs", execs.Load()-1)
	}
	out, _, st := follow(t, r, ref, "fast")
	if out != env["TOKEN"]+"|a b|'c'|" || st.Code != 4 {
		t.Errorf("stdout %q status %+v", out, st)
	}
	// The session served its one launch and closed: the sandbox is single-use
	// and a running task holds no connection.
	if primed(r, ref.AllocID) {
		t.Error("the session stayed open after its launch")
	}
	waitNone(t, ref, "akp-session")
	if err := r.Launch(ctx, ref, spec); !errors.Is(err, ErrAlreadyLaunched) {
		t.Errorf("relaunch: %v", err)
	}
}

// A primed launch without a command writes the env from the host, for execs.
func TestPrimedPrepareWritesEnvForExec(t *testing.T) {
	r, ref := localSandbox(t)
	ctx := ctxT(t, 10*time.Second)
	if err := r.Prime(ctx, ref); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"TOKEN": "it's a \"secret\"\n$x"}
	if err := r.Launch(ctx, ref, Spec{ID: "hold", Env: env}); err != nil {
		t.Fatal(err)
	}
	o, _, code, err := execOutput(ctx, r, ref, "hold", []string{"/bin/sh", "-c", `printf %s "$TOKEN"`})
	if err != nil || code != 0 || string(o) != env["TOKEN"] {
		t.Errorf("exec env: %q %d %v", o, code, err)
	}
}

// Sessions into different sandboxes launch at once, each its own run.
func TestPrimedLaunchesInParallel(t *testing.T) {
	var wg sync.WaitGroup
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, ref := localSandbox(t)
			if err := r.Prime(ctxT(t, 10*time.Second), ref); err != nil {
				t.Error(err)
				return
			}
			id := "p" + string(rune('a'+i))
			if err := r.Launch(ctxT(t, 10*time.Second), ref, Spec{ID: id, Command: "/bin/echo", Args: []string{id}}); err != nil {
				t.Error(err)
				return
			}
			if out, _, _ := follow(t, r, ref, id); out != id+"\n" {
				t.Errorf("%s: stdout %q", id, out)
			}
		}()
	}
	wg.Wait()
}

// A session that dies is reported lost and forgotten; the launch goes by
// exec, and priming again brings the fast path back.
func TestLostSessionFallsBackAndIsReported(t *testing.T) {
	r, ref := localSandbox(t)
	lost := make(chan string, 1)
	r.OnSessionLost = func(id string) { lost <- id }
	execs := countExecs(r)
	ctx := ctxT(t, 10*time.Second)
	if err := r.Prime(ctx, ref); err != nil {
		t.Fatal(err)
	}
	for _, pid := range sandboxProcs(ref, "akp-session") {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	select {
	case id := <-lost:
		if id != ref.AllocID {
			t.Errorf("lost %q, want %q", id, ref.AllocID)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a dead session was not reported")
	}
	if primed(r, ref.AllocID) {
		t.Fatal("a dead session still counts as primed")
	}
	if err := r.Launch(ctx, ref, Spec{ID: "slow", Command: "/bin/echo", Args: []string{"by exec"}}); err != nil {
		t.Fatal(err)
	}
	if execs.Load() != 2 {
		t.Errorf("%d execs, want prime + launch", execs.Load())
	}
	if out, _, _ := follow(t, r, ref, "slow"); !strings.Contains(out, "by exec") {
		t.Errorf("stdout %q", out)
	}
	if err := r.Prime(ctx, ref); err != nil {
		t.Fatal(err)
	}
	if err := r.Launch(ctx, ref, Spec{ID: "fast-again", Command: "/bin/true"}); err != nil || execs.Load() != 3 {
		t.Fatalf("launch after re-prime: %v, %d execs", err, execs.Load())
	}
}

// MaxSessions bounds the connections priming holds; Close ends them all
// without touching runs, and a closed session is not reported lost.
func TestSessionsAreBoundedAndClosed(t *testing.T) {
	r, ref := localSandbox(t)
	r.MaxSessions = 1
	var lost atomic.Int32
	r.OnSessionLost = func(string) { lost.Add(1) }
	ctx := ctxT(t, 10*time.Second)
	if err := r.Prime(ctx, ref); err != nil {
		t.Fatal(err)
	}
	other := ref
	other.AllocID = "fedcba9876543210"
	if err := r.Prime(ctx, other); err != nil || primed(r, other.AllocID) {
		t.Fatalf("second session: %v, primed %v; want none opened and no error (launches there go by exec)", err, primed(r, other.AllocID))
	}
	r.Close()
	waitNone(t, ref, "akp-session")
	if primed(r, ref.AllocID) || lost.Load() != 0 {
		t.Fatalf("after Close: primed %v, lost %d", primed(r, ref.AllocID), lost.Load())
	}
}

// waitNone waits until no process of the fake sandbox carries marker.
func waitNone(t *testing.T, ref Ref, marker string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for len(sandboxProcs(ref, marker)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%s processes still running", marker)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A running command holds no exec session: the session ends once its launch
// is answered, though the command runs on (Nomad ends an exec session only
// when its process has exited and its output is closed, as the fake does).
func TestPrimedLaunchLeavesNoSessionOpen(t *testing.T) {
	r, ref := localSandbox(t)
	var open atomic.Int32
	inner := r.exec
	r.exec = func(ctx context.Context, ref Ref, tty bool, cmd []string, stdin io.Reader, stdout, stderr io.Writer, resize <-chan api.TerminalSize) (int, error) {
		open.Add(1)
		defer open.Add(-1)
		return inner(ctx, ref, tty, cmd, stdin, stdout, stderr, resize)
	}
	ctx := ctxT(t, 10*time.Second)
	if err := r.Prime(ctx, ref); err != nil {
		t.Fatal(err)
	}
	if err := r.Launch(ctx, ref, Spec{ID: "long", Command: "/bin/sh", Args: []string{"-c", "echo up; sleep 30"}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for open.Load() > 0 {
		if time.Now().After(deadline) {
			t.Fatal("the launch session stayed open while its command runs")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if st, exited, err := r.Status(ref, "long"); err != nil || exited {
		t.Fatalf("the command did not run on: %+v %v %v", st, exited, err)
	}
}

// primed reports whether the runner holds a launch session into the sandbox.
func primed(r *Runner, allocID string) bool {
	_, ok := r.SessionInfo(allocID)
	return ok
}
