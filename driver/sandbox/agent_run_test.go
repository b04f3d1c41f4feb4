package sandbox

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"
)

// TestAgent runs every behaviour against sandboxes of a real Nomad agent, under
// raw_exec and exec. It skips without a nomad binary (NOMAD_BIN).
func TestAgent(t *testing.T) {
	if testing.Short() {
		t.Skip("real agent test")
	}
	r, boxes := startSandboxes(t)
	for drv, box := range boxes {
		t.Run(drv, func(t *testing.T) {
			ref := box.ref
			t.Run("paths", func(t *testing.T) { agentPaths(t, r, ref) })
			t.Run("output and exit code", func(t *testing.T) { agentOutput(t, r, ref, "") })
			t.Run("outlives exec session", func(t *testing.T) { agentDetached(t, r, ref) })
			t.Run("signal", func(t *testing.T) { agentSignal(t, r, ref, "") })
			t.Run("follow resumes", func(t *testing.T) { agentResume(t, r, ref) })
			t.Run("exec stdin", func(t *testing.T) { agentExecStdin(t, r, ref, "") })
			t.Run("exec tty", func(t *testing.T) { agentExecTTY(t, r, ref) })
			t.Run("exec cancel", func(t *testing.T) { agentExecCancel(t, r, ref) })
			t.Run("prime", func(t *testing.T) {
				if err := r.Prime(ctxT(t, 30*time.Second), ref); err != nil {
					t.Fatal(err)
				}
			})
			t.Run("primed output and exit code", func(t *testing.T) { agentOutput(t, r, ref, "primed-") })
			t.Run("primed signal", func(t *testing.T) { agentSignal(t, r, ref, "primed-") })
			t.Run("primed exec stdin", func(t *testing.T) { agentExecStdin(t, r, ref, "primed-") })
			t.Run("dies with sandbox", func(t *testing.T) { agentDiesWithSandbox(t, r, ref, drv == "raw_exec") })
		})
	}
}

// agentPaths shows where Nomad points an exec'd command, and that the run dir
// it makes is the one Follow reads on the host.
func agentPaths(t *testing.T, r *Runner, ref Ref) {
	ctx := ctxT(t, 30*time.Second)
	if err := r.Launch(ctx, ref, Spec{ID: "paths"}); err != nil {
		t.Fatal(err)
	}
	out, errOut, code, err := execOutput(ctx, r, ref, "paths", []string{"/bin/sh", "-c",
		`echo "alloc=$NOMAD_ALLOC_DIR secrets=$NOMAD_SECRETS_DIR task=$NOMAD_TASK_DIR own=$SANDBOX_OWN pwd=$(pwd) uid=$(id -u)"`})
	if err != nil || code != 0 {
		t.Fatalf("exec: %v code %d stderr %s", err, code, errOut)
	}
	t.Logf("exec'd command sees: %s", out)
	if !strings.Contains(string(out), "own=warm-") {
		t.Errorf("exec'd command lacks the sandbox task's env: %s", out)
	}
	if _, err := os.Stat(ref.RunDir("paths")); err != nil {
		t.Errorf("run dir not at the host path: %v", err)
	}
}

func agentOutput(t *testing.T, r *Runner, ref Ref, pfx string) {
	ctx := ctxT(t, 30*time.Second)
	env := map[string]string{"GREETING": "hello 'quoted' $HOME `x`\nline2", "SANDBOX_OWN": "task"}
	spec := Spec{ID: pfx + "out", Command: "/bin/sh", Args: []string{"-c", `echo "$GREETING"; echo "$1/$SANDBOX_OWN" >&2; exit 3`, "sh", "arg one"}, Env: env}
	if err := r.Launch(ctx, ref, spec); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if _, err := os.Stat(filepath.Join(ref.RunDir(spec.ID), fileArgv)); (err == nil) != (pfx != "") {
		t.Errorf("launched through the daemon: %v, want %v", err == nil, pfx != "")
	}
	st, err := r.Follow(ctx, ref, spec.ID, Offsets{}, &out, &errOut, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st != (ExitStatus{Code: 3}) || out.String() != env["GREETING"]+"\n" || errOut.String() != "arg one/task\n" {
		t.Errorf("status %+v stdout %q stderr %q", st, out.String(), errOut.String())
	}
	// The task's env reaches exec'd commands too.
	o, _, code, err := execOutput(ctx, r, ref, spec.ID, []string{"/bin/sh", "-c", `printf %s "$GREETING"`})
	if err != nil || code != 0 || string(o) != env["GREETING"] {
		t.Errorf("exec env: %q code %d err %v", o, code, err)
	}
}

// agentDetached: the command runs on after the launch's exec session ends.
func agentDetached(t *testing.T, r *Runner, ref Ref) {
	ctx := ctxT(t, 30*time.Second)
	if err := r.Launch(ctx, ref, Spec{ID: "detached", Command: "/bin/sh", Args: []string{"-c", "sleep 2; echo survived"}}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if _, exited, _ := r.Status(ref, "detached"); exited {
		t.Fatal("command ended with its exec session")
	}
	var out bytes.Buffer
	st, err := r.Follow(ctx, ref, "detached", Offsets{}, &out, io.Discard, nil)
	if err != nil || st != (ExitStatus{}) || out.String() != "survived\n" {
		t.Errorf("status %+v out %q err %v", st, out.String(), err)
	}
}

func agentSignal(t *testing.T, r *Runner, ref Ref, pfx string) {
	ctx := ctxT(t, 30*time.Second)
	id := pfx + "sig"
	if err := r.Launch(ctx, ref, Spec{ID: id, Command: "/bin/sleep", Args: []string{"30"}}); err != nil {
		t.Fatal(err)
	}
	if err := r.Signal(ctx, ref, id, "SIGTERM"); err != nil {
		t.Fatal(err)
	}
	st, err := r.Follow(ctx, ref, id, Offsets{}, io.Discard, io.Discard, nil)
	if err != nil || st.Signal != 15 {
		t.Errorf("status %+v err %v, want signal 15", st, err)
	}
	if err := r.Signal(ctx, ref, id, "SIGKILL"); err != nil {
		t.Errorf("signal after exit: %v", err)
	}
}

func agentResume(t *testing.T, r *Runner, ref Ref) {
	ctx := ctxT(t, 60*time.Second)
	script := `i=0; while [ $i -lt 30 ]; do echo "line $i"; i=$((i+1)); sleep 0.05; done`
	if err := r.Launch(ctx, ref, Spec{ID: "resume", Command: "/bin/sh", Args: []string{"-c", script}}); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	var saved Offsets
	fctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	_, err := r.Follow(fctx, ref, "resume", Offsets{}, &out, io.Discard, func(o Offsets) { saved = o })
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("first follow: %v", err)
	}
	if saved.Stdout == 0 || int(saved.Stdout) != out.Len() {
		t.Fatalf("saved %+v after %d bytes", saved, out.Len())
	}
	if _, err := r.Follow(ctx, ref, "resume", saved, &out, io.Discard, func(o Offsets) { saved = o }); err != nil {
		t.Fatal(err)
	}
	var want strings.Builder
	for i := 0; i < 30; i++ {
		want.WriteString("line " + strconv.Itoa(i) + "\n")
	}
	if out.String() != want.String() {
		t.Errorf("output across two follows:\n%s", out.String())
	}
}

func agentExecStdin(t *testing.T, r *Runner, ref Ref, pfx string) {
	ctx := ctxT(t, 30*time.Second)
	id := pfx + "exec"
	if err := r.Launch(ctx, ref, Spec{ID: id, Env: map[string]string{"FOO": "from-task"}}); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	code, err := r.Exec(ctx, ref, id, []string{"/bin/sh", "-c", `cat; echo "$FOO"; echo oops >&2; exit 7`}, false,
		strings.NewReader("line from stdin\n"), &out, &errOut, nil)
	if err != nil || code != 7 || out.String() != "line from stdin\nfrom-task\n" || errOut.String() != "oops\n" {
		t.Errorf("code %d err %v stdout %q stderr %q", code, err, out.String(), errOut.String())
	}
}

func agentExecTTY(t *testing.T, r *Runner, ref Ref) {
	ctx := ctxT(t, 30*time.Second)
	if err := r.Launch(ctx, ref, Spec{ID: "tty"}); err != nil {
		t.Fatal(err)
	}
	resize := make(chan api.TerminalSize, 1)
	resize <- api.TerminalSize{Height: 33, Width: 101}
	pr, pw := io.Pipe()
	defer pw.Close()
	var out bytes.Buffer
	go func() {
		time.Sleep(300 * time.Millisecond)
		_, _ = pw.Write([]byte("hi\r"))
	}()
	code, err := r.Exec(ctx, ref, "tty", []string{"/bin/sh", "-c", `read line; echo "got:$line size:$(stty size)"; [ -t 0 ] && exit 7`}, true,
		pr, &out, &out, resize)
	if err != nil || code != 7 || !strings.Contains(out.String(), "got:hi size:33 101") {
		t.Errorf("code %d err %v out %q", code, err, out.String())
	}
}

// agentExecCancel: a user who goes away takes the remote process with them.
func agentExecCancel(t *testing.T, r *Runner, ref Ref) {
	if err := r.Launch(ctxT(t, 30*time.Second), ref, Spec{ID: "cancel"}); err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(ref.HostAllocDir, "alloc", "cancel-marker")
	for _, tty := range []bool{false, true} {
		os.Remove(marker)
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			waitFile(t, marker, "\n")
			cancel()
		}()
		pr, pw := io.Pipe()
		_, err := r.Exec(ctx, ref, "cancel", []string{"/bin/sh", "-c",
			`echo $$ >"${NOMAD_ALLOC_DIR:-/alloc}/cancel-marker"; exec sleep 60`}, tty, pr, io.Discard, io.Discard, nil)
		pw.Close()
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("tty=%v: exec returned %v, want cancelled", tty, err)
		}
		b, _ := os.ReadFile(marker)
		pid := strings.TrimSpace(string(b))
		// Ask inside the sandbox: pids there are the sandbox's own.
		deadline := time.Now().Add(10 * time.Second)
		for {
			_, _, code, err := execOutput(ctxT(t, 10*time.Second), r, ref, "cancel", []string{"/bin/sh", "-c", "kill -0 " + pid})
			if err != nil {
				t.Fatal(err)
			}
			if code != 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("tty=%v: exec'd process %s still alive after cancel", tty, pid)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}

// agentDiesWithSandbox: stopping the sandbox ends the command and everything
// else of ours in it. Under raw_exec on cgroups v1 Nomad leaves the run
// running (DESIGN.md, "What survives what"): there the driver's DestroyTask
// reaps the command's session (Reap), and the supervisor, left without its
// command, exits; hostRuns says the sandbox is such a one. (Following such a
// run ends when its follower's context does: the driver learns from the pool
// that the sandbox died.)
func agentDiesWithSandbox(t *testing.T, r *Runner, ref Ref, hostRuns bool) {
	ctx := ctxT(t, 60*time.Second)
	runID := "dies"
	if err := r.Launch(ctx, ref, Spec{ID: runID, Command: "/bin/sleep", Args: []string{"300"}}); err != nil {
		t.Fatal(err)
	}
	// Launch returns once the supervisor reported the command's pid: the
	// command's process may still be between fork and exec, not yet known
	// by the alloc dir in its environment.
	for deadline := time.Now().Add(5 * time.Second); len(allocProcs(ref.AllocID)) < 3 && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
	}
	if len(allocProcs(ref.AllocID)) < 3 {
		t.Fatalf("sandbox processes: %v, want the task, the run and its supervisor", allocProcs(ref.AllocID))
	}
	if _, err := r.Client.Allocations().Stop(&api.Allocation{ID: ref.AllocID, Namespace: ref.Namespace},
		(&api.QueryOptions{}).WithContext(ctx)); err != nil {
		t.Fatal(err)
	}
	gone := func(within time.Duration) bool {
		deadline := time.Now().Add(within)
		for len(allocProcs(ref.AllocID)) > 0 && time.Now().Before(deadline) {
			time.Sleep(200 * time.Millisecond)
		}
		return len(allocProcs(ref.AllocID)) == 0
	}
	if !gone(15*time.Second) && hostRuns {
		t.Logf("left by the stop (raw_exec without a cgroup that ends them): %v", allocProcs(ref.AllocID))
		if n := Reap(ref, runID); n == 0 {
			t.Errorf("Reap found nothing of run %s", runID)
		}
		gone(5 * time.Second)
	}
	if left := allocProcs(ref.AllocID); len(left) != 0 {
		t.Errorf("processes outlived their sandbox: %v", left)
	}
	if err := r.Launch(ctx, ref, Spec{ID: "late", Command: "/bin/true"}); !errors.Is(err, ErrAllocGone) {
		t.Errorf("launch into a stopped sandbox: %v, want ErrAllocGone", err)
	}
}

// allocProcs describes the live host processes started in an allocation.
func allocProcs(allocID string) []string {
	var out []string
	for _, pid := range allocPids(allocID) {
		cmdline, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
		if len(cmdline) > 60 {
			cmdline = cmdline[:60]
		}
		out = append(out, strconv.Itoa(pid)+": "+strings.ReplaceAll(string(cmdline), "\x00", " "))
	}
	return out
}
