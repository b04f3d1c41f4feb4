package e2e

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-pool/internal/nomadtest"
)

func jobHCL(t testing.TB, name string, replace ...string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("jobs", name))
	if err != nil {
		t.Fatal(err)
	}
	return strings.NewReplacer(replace...).Replace(string(b))
}

// TestCommandOutputAndExitCode: a sandbox job with a command shows its output in
// nomad alloc logs and its exit code in the task state; afterwards the claimed
// sandbox is purged and the pool refills.
func TestCommandOutputAndExitCode(t *testing.T) {
	a := sandboxAgent(t, 2, 6, false)
	alloc := runJob(t, a, jobHCL(t, "command.nomad.hcl"))
	ts := waitTask(t, a, alloc.ID, "agent", "dead", 60*time.Second)
	if code, ok := exitCode(ts); !ok || code != 3 {
		t.Errorf("exit code %d (found %v), want 3; events:\n%s", code, ok, events(ts))
	}
	if out := logs(t, a, alloc.ID, "agent"); !strings.Contains(out, "out:hello from the task env") {
		t.Errorf("stdout %q lacks the command's output with the task env", out)
	}
	stderr, _, _ := nomadCLI(t, a, "", "alloc", "logs", "-stderr", alloc.ID, "agent")
	if !strings.Contains(stderr, "err:hello from the task env") {
		t.Errorf("stderr %q lacks the command's stderr", stderr)
	}
	if !strings.Contains(events(ts), "Claimed warm sandbox") {
		t.Errorf("no claim event:\n%s", events(ts))
	}
	// The used sandbox is purged, never reused, and the pool is back to size.
	waitFor(t, 60*time.Second, "2 live warm instances and no claimed one", func() bool { return len(warmJobs(t, a)) == 2 })
	waitWarm(t, a, "dev", 2)

	// agentkernel-pool status shows the node's pool as Nomad has it.
	node, err := a.Node(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	defer func() {
		if t.Failed() {
			t.Logf("last status output (err %v):\n%s", err, out)
		}
	}()
	waitFor(t, 30*time.Second, "agentkernel-pool status to show pool dev with 2 warm", func() bool {
		out, err = exec.Command(filepath.Join(nomadtest.BuildPlugin(t), "agentkernel-pool"), "status", "-address", a.Addr).CombinedOutput()
		f := strings.Fields(lastLine(string(out))) // NODE POOL SIZE TARGET MAX WARM ...
		return err == nil && len(f) >= 6 && (f[0] == node.Name || f[0] == node.ID[:8]) && f[1] == "dev" && f[5] == "2"
	})
}

// TestIdleSandboxExec: an idle sandbox answers nomad alloc exec with stdin, tty and a
// non-zero exit code intact, and with the task's env.
func TestIdleSandboxExec(t *testing.T) {
	a := sandboxAgent(t, 1, 4, false)
	alloc := runJob(t, a, jobHCL(t, "idle.nomad.hcl"))
	waitTask(t, a, alloc.ID, "agent", "running", 60*time.Second)

	out, errOut, code := nomadCLI(t, a, "line one\nline two\n", "alloc", "exec", "-i", "-t=false", "-task", "agent", alloc.ID,
		"/bin/sh", "-c", "cat; echo secret=$SECRET; exit 42")
	if code != 42 {
		t.Errorf("exec exit code %d, want 42 (stderr %q)", code, errOut)
	}
	if !strings.Contains(out, "line one\nline two\n") || !strings.Contains(out, "secret=per-task-secret") {
		t.Errorf("exec stdout %q: want stdin echoed and the task env", out)
	}
	// With a tty the command sees a terminal of the size the user's terminal has
	// (through the API, as the CLI does: the CLI itself wants a real terminal).
	sizes := make(chan api.TerminalSize, 1)
	sizes <- api.TerminalSize{Height: 33, Width: 101}
	var ttyOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stdin, stdinW := io.Pipe() // a terminal's input stays open
	defer stdinW.Close()
	code, err := a.Client.Allocations().Exec(ctx, alloc, "agent", true, []string{"/bin/sh", "-c", "sleep 0.5; test -t 0 && stty size"},
		stdin, &ttyOut, &ttyOut, sizes, nil)
	if err != nil || code != 0 || !strings.Contains(ttyOut.String(), "33 101") {
		t.Errorf("tty exec: code %d err %v out %q; want a terminal sized 33x101", code, err, ttyOut.String())
	}
	// The exec ran in the claimed sandbox (Nomad starts it in the sandbox task's
	// dir), with the task's identity and, as the task's command has them in a
	// raw_exec sandbox, the task's own dirs.
	sb := sandboxOf(taskState(t, a, alloc.ID, "agent"))
	out, _, _ = nomadCLI(t, a, "", "alloc", "exec", "-i=false", "-t=false", "-task", "agent", alloc.ID, "/bin/sh", "-c", "echo $NOMAD_ALLOC_ID $NOMAD_ALLOC_DIR; pwd")
	fields := strings.Fields(out)
	own := filepath.Join(a.DataDir, "alloc", alloc.ID, "alloc")
	if sb == "" || len(fields) != 3 || fields[0] != alloc.ID || strings.TrimRight(fields[1], "/") != own ||
		!strings.Contains(fields[2], "/alloc/"+sb) {
		t.Errorf("exec saw NOMAD_ALLOC_ID, NOMAD_ALLOC_DIR and pwd %q; want %s, %s and a dir of sandbox %q", out, alloc.ID, own, sb)
	}
	// The sandbox task's resource usage is the claimed sandbox's, through Nomad.
	waitFor(t, 20*time.Second, "resource usage of the sandbox task", func() bool {
		st, err := a.Client.Allocations().Stats(alloc, nil)
		if err != nil {
			return false
		}
		u := st.Tasks["agent"]
		return u != nil && u.ResourceUsage != nil && u.ResourceUsage.MemoryStats != nil &&
			(u.ResourceUsage.MemoryStats.RSS > 0 || u.ResourceUsage.MemoryStats.Usage > 0)
	})
	// Stop the job (an alloc stop would place a replacement that claims again).
	_, errOut, code = nomadCLI(t, a, "", "job", "stop", "-purge", "e2e-idle")
	if code != 0 {
		t.Fatalf("job stop: %s", errOut)
	}
	waitFor(t, 60*time.Second, "the sandbox purged and the pool refilled", func() bool { return len(warmJobs(t, a)) == 1 })
}

// TestStopDeliversKillSignal: nomad alloc stop delivers the task's kill_signal to the
// command first.
func TestStopDeliversKillSignal(t *testing.T) {
	a := sandboxAgent(t, 1, 4, false)
	alloc := runJob(t, a, jobHCL(t, "signal.nomad.hcl"))
	waitTask(t, a, alloc.ID, "agent", "running", 60*time.Second)
	waitFor(t, 30*time.Second, "the command to be ready", func() bool {
		out, _, _ := nomadCLI(t, a, "", "alloc", "logs", alloc.ID, "agent")
		return strings.Contains(out, "ready")
	})
	if _, errOut, code := nomadCLI(t, a, "", "alloc", "stop", "-detach", alloc.ID); code != 0 {
		t.Fatalf("alloc stop: %s", errOut)
	}
	waitFor(t, 30*time.Second, "the command's signal handler output", func() bool {
		out, _, _ := nomadCLI(t, a, "", "alloc", "logs", alloc.ID, "agent")
		return strings.Contains(out, "got USR1")
	})
	// Both log FIFOs had a writer, so logmon closed at once: a stdout-only task
	// whose stderr FIFO is never opened holds its end for seconds.
	waitTask(t, a, alloc.ID, "agent", "dead", 30*time.Second)
	time.Sleep(5 * time.Second) // logmon gives up on an unopened FIFO after about 4 s
	for _, line := range strings.Split(a.Log(), "\n") {
		if strings.Contains(line, alloc.ID) && strings.Contains(line, "timed out waiting for read-side") {
			t.Errorf("logmon waited for a log FIFO writer: %s", line)
		}
	}
}

// TestPluginKilledMidTask: killing the plugin process mid-task loses nothing: the
// command keeps running, Nomad relaunches the plugin, which recovers the task; the
// output after the kill arrives, the exit code is right, and the command ran once.
func TestPluginKilledMidTask(t *testing.T) {
	a := sandboxAgent(t, 1, 4, false)
	marker := filepath.Join(t.TempDir(), "m")
	alloc := runJob(t, a, jobHCL(t, "long.nomad.hcl", "MARKER", marker))
	waitTask(t, a, alloc.ID, "agent", "running", 60*time.Second)
	waitFor(t, 30*time.Second, "first output", func() bool { return strings.Contains(logs(t, a, alloc.ID, "agent"), "before") })

	waitWarm(t, a, "dev", 1)
	before := warmJobs(t, a)
	pids := pluginPIDs(t, a)
	if len(pids) == 0 {
		t.Fatal("no plugin process found")
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatalf("kill plugin %d: %v", pid, err)
		}
	}
	waitFor(t, 60*time.Second, "a new plugin process", func() bool {
		for _, p := range pluginPIDs(t, a) {
			if !contains(pids, p) {
				return true
			}
		}
		return false
	})
	// The new plugin adopts the warm pool as it is: nothing replaced.
	waitWarm(t, a, "dev", 1)
	time.Sleep(2 * time.Second)
	if after := warmJobs(t, a); jobIDs(after) != jobIDs(before) {
		t.Errorf("warm jobs before the kill %s, after %s: want the same", jobIDs(before), jobIDs(after))
	}
	releaseLongRun(t, a, alloc.ID, marker, 60*time.Second)
}

// jobIDs lists the jobs' IDs, sorted, for comparing sets.
func jobIDs(jobs []*api.JobListStub) string {
	var ids []string
	for _, j := range jobs {
		ids = append(ids, j.ID)
	}
	slices.Sort(ids)
	return strings.Join(ids, " ")
}

// TestAgentRestartMidTask: a graceful agent restart (which restarts the plugin)
// mid-task ends with the right exit code and no duplicate run.
func TestAgentRestartMidTask(t *testing.T) {
	a := sandboxAgent(t, 1, 4, true)
	marker := filepath.Join(t.TempDir(), "m")
	alloc := runJob(t, a, jobHCL(t, "long.nomad.hcl", "MARKER", marker))
	waitTask(t, a, alloc.ID, "agent", "running", 60*time.Second)
	waitFor(t, 30*time.Second, "first output", func() bool { return strings.Contains(logs(t, a, alloc.ID, "agent"), "before") })

	a.Restart()
	releaseLongRun(t, a, alloc.ID, marker, 90*time.Second)
}

// releaseLongRun lets jobs/long.nomad.hcl finish and checks that it ran once, that
// its output before and after the disruption arrived once, and its exit code.
func releaseLongRun(t *testing.T, a *nomadtest.Agent, allocID, marker string, within time.Duration) {
	t.Helper()
	if err := os.WriteFile(marker+".release", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	ts := waitTask(t, a, allocID, "agent", "dead", within)
	if code, _ := exitCode(ts); code != 5 {
		t.Errorf("exit code %d, want 5; events:\n%s", code, events(ts))
	}
	if out := logs(t, a, allocID, "agent"); strings.Count(out, "before") != 1 || !strings.Contains(out, "after") {
		t.Errorf("output %q: want 'before' once and 'after'", out)
	}
	runs, _ := os.ReadFile(marker + ".runs")
	if strings.Count(string(runs), "run") != 1 {
		t.Errorf("the command ran %d times, want once", strings.Count(string(runs), "run"))
	}
}

func contains(xs []int, x int) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

// TestExecTemplateIsolated: a pool of Nomad's isolated exec driver runs the task's
// command inside the chroot of the warm sandbox, not on the host.
func TestExecTemplateIsolated(t *testing.T) {
	a := execPoolAgent(t, "iso", 1, 3)
	hostOnly := t.TempDir() // exists on the host, not in the sandbox's chroot
	alloc := runJob(t, a, jobHCL(t, "command.nomad.hcl", `pool    = "dev"`, `pool    = "iso"`,
		`echo out:$GREETING; echo err:$GREETING >&2; exit 3`, `test -e `+hostOnly+` && echo host-visible || echo isolated; echo out:$GREETING; exit 3`))
	ts := waitTask(t, a, alloc.ID, "agent", "dead", 120*time.Second)
	if code, _ := exitCode(ts); code != 3 {
		t.Errorf("exit code %d, want 3; events:\n%s", code, events(ts))
	}
	out := logs(t, a, alloc.ID, "agent")
	if !strings.Contains(out, "isolated") || !strings.Contains(out, "out:hello from the task env") {
		t.Errorf("output %q: want the command isolated from the host, with the task env", out)
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
