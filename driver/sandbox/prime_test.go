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
	if err := r.Launch(ctx, ref, spec); !errors.Is(err, ErrAlreadyLaunched) {
		t.Errorf("relaunch: %v", err)
	}
	// The env written from the host reaches exec'd commands too.
	if err := r.Launch(ctx, ref, Spec{ID: "hold", Env: env}); err != nil {
		t.Fatal(err)
	}
	o, _, code, err := r.ExecOutput(ctx, ref, "hold", []string{"/bin/sh", "-c", `printf %s "$TOKEN"`})
	if err != nil || code != 0 || string(o) != env["TOKEN"] {
		t.Errorf("exec env: %q %d %v", o, code, err)
	}
}

func TestPrimedLaunchesInParallel(t *testing.T) {
	r, ref := localSandbox(t)
	if err := r.Prime(ctxT(t, 10*time.Second), ref); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
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

func TestLaunchFallsBackWhenDaemonIsGone(t *testing.T) {
	r, ref := localSandbox(t)
	execs := countExecs(r)
	ctx := ctxT(t, 10*time.Second)
	if err := r.Prime(ctx, ref); err != nil {
		t.Fatal(err)
	}
	daemons := sandboxProcs(ref, "akp-prime")
	if len(daemons) == 0 {
		t.Fatal("no launch daemon")
	}
	for _, pid := range daemons { // the daemon and its watchdog
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(sandboxProcs(ref, "akp-prime")) > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
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
	// Priming again brings the fast path back.
	if err := r.Prime(ctx, ref); err != nil {
		t.Fatal(err)
	}
	if err := r.Launch(ctx, ref, Spec{ID: "fast-again", Command: "/bin/true"}); err != nil || execs.Load() != 3 {
		t.Fatalf("launch after re-prime: %v, %d execs", err, execs.Load())
	}
}
