package sandbox

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestReadyCommandRunsThroughTheSession: the ready command runs in the
// launch session as often as asked, its exit code and the end of its output
// come back, its output cannot pass for a verdict, and the session still
// launches the run afterwards; under every shell a sandbox image may have.
func TestReadyCommandRunsThroughTheSession(t *testing.T) {
	for _, shell := range [][]string{{"dash"}, {"bash"}, {"busybox", "sh"}} {
		t.Run(shell[0], func(t *testing.T) {
			if _, err := exec.LookPath(shell[0]); err != nil {
				t.Skipf("no %s here", shell[0])
			}
			r, ref := localSandboxShell(t, shell)
			ctx := ctxT(t, 20*time.Second)
			marker := filepath.Join(ref.HostAllocDir, "alloc", "prepared")
			ready := `if [ -f ` + marker + ` ]; then exit 0; fi
echo "checked 0"
echo "not yet: no marker" >&2
printf 'no newline'
exit 3`
			if err := r.PrimeReady(ctx, ref, ready); err != nil {
				t.Fatal(err)
			}
			execs := countExecs(r)
			for range 3 {
				res, err := r.CheckReady(ctx, ref.AllocID)
				if err != nil {
					t.Fatal(err)
				}
				if want := "checked 0\nnot yet: no marker\nno newline\n"; res.Code != 3 || string(res.Output) != want {
					t.Fatalf("before the marker: code %d output %q; want 3 and %q", res.Code, res.Output, want)
				}
			}
			if err := os.WriteFile(marker, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if res, err := r.CheckReady(ctx, ref.AllocID); err != nil || res.Code != 0 || len(res.Output) != 0 {
				t.Fatalf("with the marker: %+v, %v; want code 0, no output", res, err)
			}
			if n := execs.Load(); n != 0 {
				t.Errorf("%d execs for 4 checks; want none (the session runs them)", n)
			}
			if err := r.Launch(ctx, ref, Spec{ID: "after", Command: "/bin/echo", Args: []string{"launched"}}); err != nil {
				t.Fatal(err)
			}
			if out, _, st := follow(t, r, ref, "after"); out != "launched\n" || st.Code != 0 {
				t.Errorf("launch after checks: %q %+v", out, st)
			}
			if _, err := r.CheckReady(ctx, ref.AllocID); !errors.Is(err, ErrNoSession) {
				t.Errorf("check after the launch took the session: %v; want ErrNoSession", err)
			}
		})
	}
}

// TestReadyOutputIsBounded: a ready command printing a flood, one long line
// and many short ones, leaves the host its last MaxReadyOutput bytes.
func TestReadyOutputIsBounded(t *testing.T) {
	r, ref := localSandbox(t)
	ctx := ctxT(t, 20*time.Second)
	ready := `head -c 200000 /dev/zero | tr '\0' x; echo; i=0; while [ $i -lt 2000 ]; do echo "line $i"; i=$((i+1)); done; exit 1`
	if err := r.PrimeReady(ctx, ref, ready); err != nil {
		t.Fatal(err)
	}
	res, err := r.CheckReady(ctx, ref.AllocID)
	if err != nil {
		t.Fatal(err)
	}
	if res.Code != 1 || len(res.Output) > MaxReadyOutput || !strings.HasSuffix(string(res.Output), "line 1999\n") {
		t.Errorf("code %d, %d bytes ending %q; want 1, at most %d bytes ending with the last line", res.Code, len(res.Output), res.Output[max(0, len(res.Output)-20):], MaxReadyOutput)
	}
}

// TestSlowReadyCommandIsNotStartedTwice: a check that does not finish in
// time says so, and the next call takes its answer instead of starting a
// second run alongside it.
func TestSlowReadyCommandIsNotStartedTwice(t *testing.T) {
	r, ref := localSandbox(t)
	ctx := ctxT(t, 20*time.Second)
	runs := filepath.Join(ref.HostAllocDir, "alloc", "runs")
	if err := r.PrimeReady(ctx, ref, `echo run >>`+runs+`; sleep 1; exit 4`); err != nil {
		t.Fatal(err)
	}
	if _, err := r.CheckReady(ctxT(t, 100*time.Millisecond), ref.AllocID); !errors.Is(err, ErrCheckUnfinished) {
		t.Fatalf("first check: %v; want ErrCheckUnfinished", err)
	}
	res, err := r.CheckReady(ctx, ref.AllocID)
	if err != nil || res.Code != 4 {
		t.Fatalf("second check: %+v, %v; want the first run's code 4", res, err)
	}
	if b, _ := os.ReadFile(runs); string(b) != "run\n" {
		t.Errorf("runs %q; want one", b)
	}
}
