package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentkernel/agentkernel-pool/internal/nomadtest"
)

// verb is one row of the verb matrix: a Nomad verb a user runs on a task,
// run on the same job under exec (the reference) and under a pool.
type verb struct {
	name string
	// pool is where the case runs beside exec.
	pool flavor
	// run runs the case's job under f and asserts what holds under every
	// flavor; it returns what the user saw, which must be the same under
	// exec and the pool unless differs is set.
	run func(t *testing.T, a *nomadtest.Agent, f flavor) string
	// differs is what README's "Nomad verbs" table says differs; run then
	// asserts each flavor's own result.
	differs string
}

// verbs is the matrix. Restarts (`alloc restart` of a task and of the whole
// allocation, restart policy retries) are TestOutputAcrossRestarts.
var verbs = []verb{
	{name: "alloc logs", pool: execPool, run: verbLogs},
	{name: "alloc logs -f", pool: execPool, run: verbLogsFollow},
	{name: "alloc signal", pool: execPool, run: verbSignal},
	{name: "alloc signal SIGINT", pool: execPool, run: verbSignalInt, differs: "SIGINT ignored"},
	{name: "job stop default signal", pool: execPool, run: verbStopDefault, differs: "SIGTERM, not SIGINT"},
	{name: "job stop kill_signal", pool: execPool, run: verbStopHandler},
	{name: "job stop kill_timeout", pool: execPool, run: verbStopKill},
	{name: "max_kill_timeout", pool: execPool, run: verbMaxKillTimeout},
	{name: "alloc stop", pool: execPool, run: verbAllocStop},
	{name: "alloc exec", pool: execPool, run: verbExec},
	{name: "alloc fs", pool: execPool, run: verbFS, differs: "local/ of a running task"},
	{name: "alloc status -stats", pool: execPool, run: verbStats},
	{name: "job dispatch", pool: execPool, run: verbDispatch},
	{name: "lifecycle sidecars", pool: execPool, run: verbSidecars},
	{name: "two sandbox tasks", pool: execPool, run: verbTwoTasks},
}

// TestVerbs: each Nomad verb a user runs on a task gives the same result on a
// sandbox task as on the same task under exec, or the difference README's
// "Nomad verbs" table names. One agent runs exec tasks and an exec pool; the
// cases run one after another.
func TestVerbs(t *testing.T) {
	a := parityAgent(t, 2, 6)
	for _, v := range verbs {
		t.Run(v.name, func(t *testing.T) {
			got := map[string]string{}
			for _, f := range []flavor{underExec, v.pool} {
				t.Run(f.name, func(t *testing.T) { got[f.name] = v.run(t, a, f) })
			}
			if v.differs == "" && !t.Failed() && got[underExec.name] != got[v.pool.name] {
				t.Errorf("under exec the user sees\n%s\nunder %s\n%s", got[underExec.name], v.pool.name, got[v.pool.name])
			}
		})
	}
}

// verbJob is a job ID for the running (sub)test.
func verbJob(t *testing.T) string {
	id := strings.ToLower(strings.NewReplacer("/", "-", " ", "-", "_", "-").Replace(t.Name()))
	return strings.TrimPrefix(id, "testverbs-")
}

// loop is a script that prints a line and runs until stopped.
const loop = "echo run " + stamp + "; while :; do sleep 0.2; done"

// runVerbJob registers the job and returns its first allocation; the job is
// purged when the test ends.
func runVerbJob(t *testing.T, a *nomadtest.Agent, id, hcl string) string {
	t.Helper()
	alloc := runJob(t, a, hcl)
	t.Cleanup(func() { stopJob(t, a, id) })
	return alloc.ID
}

// cli runs the nomad CLI and fails the test unless it exits 0.
func cli(t *testing.T, a *nomadtest.Agent, stdin string, args ...string) string {
	t.Helper()
	out, errOut, code := nomadCLI(t, a, stdin, args...)
	if code != 0 {
		t.Fatalf("nomad %s: exit %d: %s%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// waitLog waits until the task's stdout (stderr) holds want, and returns it.
func waitLog(t *testing.T, a *nomadtest.Agent, allocID, task, want string, within time.Duration) string {
	t.Helper()
	var out string
	waitFor(t, within, "the logs of "+task+" to show "+want, func() bool {
		var code int
		out, _, code = nomadCLI(t, a, "", "alloc", "logs", allocID, task)
		return code == 0 && strings.Contains(out, want)
	})
	return out
}

func verbLogs(t *testing.T, a *nomadtest.Agent, f flavor) string {
	id := verbJob(t)
	alloc := runVerbJob(t, a, id, parityJob(id, "batch", noRetries, f.task("t", "echo out-1; echo err-1 >&2; echo out-2; echo err-2 >&2", "")))
	ts := waitTask(t, a, alloc, "t", "dead", 3*time.Minute)
	if code, ok := exitCode(ts); !ok || code != 0 {
		t.Errorf("exit code %d (found %v), want 0; events:\n%s", code, ok, events(ts))
	}
	out := logs(t, a, alloc, "t")
	errOut := cli(t, a, "", "alloc", "logs", "-stderr", alloc, "t")
	if out != "out-1\nout-2\n" || errOut != "err-1\nerr-2\n" {
		t.Errorf("stdout %q, stderr %q; want each stream's two lines, in order", out, errOut)
	}
	return out + errOut
}

// verbLogsFollow: `alloc logs -f` on a running task streams what it prints
// from then on.
func verbLogsFollow(t *testing.T, a *nomadtest.Agent, f flavor) string {
	id := verbJob(t)
	alloc := runVerbJob(t, a, id, parityJob(id, "batch", noRetries, f.task("t", "i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.5; done", "")))
	before := highestNumbered(t, waitLog(t, a, alloc, "t", "tick 1\n", 3*time.Minute), "tick ")
	follow(t, a, time.Minute, "ticks printed after -f started", func(out string) bool {
		return highestNumbered(t, out, "tick ") >= before+3
	}, "alloc", "logs", "-f", alloc, "t")
	return "streamed"
}

// follow runs a CLI command that streams (logs -f) until its output satisfies
// until, and ends it.
func follow(t *testing.T, a *nomadtest.Agent, within time.Duration, what string, until func(string) bool, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	cmd := exec.CommandContext(ctx, nomadBin(t), args...)
	cmd.Env = append(os.Environ(), "NOMAD_ADDR="+a.Addr)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = cmd.Wait() }()
	for !until(out.String()) {
		if ctx.Err() != nil {
			t.Fatalf("nomad %s: no %s within %s; it printed:\n%s", strings.Join(args, " "), what, within, out.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// verbSignal: `alloc signal` delivers HUP, USR1 and TERM to the command,
// whose traps print; TERM's ends it with its handler's exit code.
func verbSignal(t *testing.T, a *nomadtest.Agent, f flavor) string {
	id := verbJob(t)
	script := "trap 'echo got HUP' HUP; trap 'echo got USR1' USR1; trap 'echo got TERM; exit 5' TERM; echo ready; while :; do sleep 0.2; done"
	alloc := runVerbJob(t, a, id, parityJob(id, "batch", noRetries, f.task("t", script, "")))
	waitLog(t, a, alloc, "t", "ready\n", 3*time.Minute)
	for _, sig := range []string{"HUP", "USR1"} {
		cli(t, a, "", "alloc", "signal", "-s", "SIG"+sig, alloc, "t")
		waitLog(t, a, alloc, "t", "got "+sig+"\n", time.Minute)
	}
	cli(t, a, "", "alloc", "signal", "-s", "SIGTERM", alloc, "t")
	ts := waitTask(t, a, alloc, "t", "dead", 2*time.Minute)
	out := logs(t, a, alloc, "t")
	code, _ := exitCode(ts)
	if out != "ready\ngot HUP\ngot USR1\ngot TERM\n" || code != 5 {
		t.Errorf("logs %q, exit code %d; want each signal's line and the TERM handler's exit code 5; events:\n%s", out, code, events(ts))
	}
	return out
}

// verbSignalInt: SIGINT. The documented difference: under a pool the command
// runs with SIGINT (and SIGQUIT) ignored when the sandbox's /bin/sh is dash or
// busybox: the supervisor starts it as an asynchronous list, which POSIX shells
// without job control run with both ignored, and no shell can undo that for
// what it execs. Its trap does not fire; USR1, sent after, is the barrier (a
// shell runs pending traps in signal-number order).
func verbSignalInt(t *testing.T, a *nomadtest.Agent, f flavor) string {
	id := verbJob(t)
	script := "trap 'echo got INT' INT; trap 'echo got USR1; exit 0' USR1; echo ready; while :; do sleep 0.2; done"
	alloc := runVerbJob(t, a, id, parityJob(id, "batch", noRetries, f.task("t", script, "")))
	waitLog(t, a, alloc, "t", "ready\n", 3*time.Minute)
	cli(t, a, "", "alloc", "signal", "-s", "SIGINT", alloc, "t")
	if f.pool == "" {
		waitLog(t, a, alloc, "t", "got INT\n", time.Minute)
	}
	cli(t, a, "", "alloc", "signal", "-s", "SIGUSR1", alloc, "t")
	waitTask(t, a, alloc, "t", "dead", 2*time.Minute)
	out := logs(t, a, alloc, "t")
	want := "ready\ngot INT\ngot USR1\n"
	if f.pool != "" {
		want = "ready\ngot USR1\n"
	}
	if out != want {
		t.Errorf("logs %q, want %q", out, want)
	}
	return out
}

// verbExec: `alloc exec` runs a command beside the task's, with the task's
// env, stdin and exit code; after `alloc restart`, in the new attempt.
func verbExec(t *testing.T, a *nomadtest.Agent, f flavor) string {
	id := verbJob(t)
	alloc := runVerbJob(t, a, id, parityJob(id, "batch", noRetries, f.task("t", loop, "")))
	waitLines(t, a, alloc, "t", "run ", 1, 3*time.Minute)
	var got []string
	for i := range 2 {
		if i == 1 {
			restart(t, a, alloc, "t")
			waitLines(t, a, alloc, "t", "run ", 2, 3*time.Minute)
		}
		out, errOut, code := nomadCLI(t, a, "hello\n", "alloc", "exec", "-i", "-t=false", "-task", "t", alloc,
			"/bin/sh", "-c", "echo task=$NOMAD_TASK_NAME; cat; exit 3")
		if out != "task=t\nhello\n" || code != 3 {
			t.Errorf("exec %d: stdout %q, stderr %q, exit %d; want the task's env, stdin echoed and exit 3", i+1, out, errOut, code)
		}
		got = append(got, out)
	}
	return strings.Join(got, "|")
}

// verbFS: `alloc fs` reads what the command wrote in local/ and alloc/data,
// while it runs and once it has exited.
func verbFS(t *testing.T, a *nomadtest.Agent, f flavor) string {
	id := verbJob(t)
	script := `echo local > local/out.txt; echo data > "$NOMAD_ALLOC_DIR/data/out.txt"; trap 'exit 0' USR1; echo ready; while :; do sleep 0.2; done`
	alloc := runVerbJob(t, a, id, parityJob(id, "batch", noRetries, f.task("t", script, "")))
	waitLog(t, a, alloc, "t", "ready\n", 3*time.Minute)
	read := func() (local, data string) {
		return fsCat(t, a, alloc, "t/local/out.txt"), fsCat(t, a, alloc, "alloc/data/out.txt")
	}
	runLocal, runData := read()
	cli(t, a, "", "alloc", "signal", "-s", "SIGUSR1", alloc, "t")
	waitTask(t, a, alloc, "t", "dead", 2*time.Minute)
	doneLocal, doneData := read()
	if doneLocal != "local\n" || doneData != "data\n" {
		t.Errorf("alloc fs: local/out.txt %q, alloc/data/out.txt %q after the exit: want both there", doneLocal, doneData)
	}
	// The documented differences on exec pools: local/ is copied back when
	// the command exits, so a running sandbox task's local/ shows what it
	// started with; so is alloc/data, since Nomad runs exec tasks with gid 0
	// and capabilities, whose files the host must not take as they are
	// (nsmount mounts it only into unprivileged sandboxes).
	want := map[bool]string{true: "", false: "local\n"}[f.pool == execPool.pool]
	if runLocal != want {
		t.Errorf("alloc fs t/local/out.txt while running = %q, want %q", runLocal, want)
	}
	if want := map[bool]string{true: "", false: "data\n"}[f.pool == execPool.pool]; runData != want {
		t.Errorf("alloc fs alloc/data/out.txt while running = %q, want %q", runData, want)
	}
	return runLocal + runData + doneLocal + doneData
}

// fsCat is a file's content through `alloc fs`, or "" when there is none.
func fsCat(t *testing.T, a *nomadtest.Agent, allocID, path string) string {
	t.Helper()
	out, _, code := nomadCLI(t, a, "", "alloc", "fs", allocID, path)
	if code != 0 {
		return ""
	}
	return out
}

// verbStats: `alloc status -stats` shows the running task's memory and CPU
// figures, measured the same way.
func verbStats(t *testing.T, a *nomadtest.Agent, f flavor) string {
	id := verbJob(t)
	alloc := runVerbJob(t, a, id, parityJob(id, "batch", noRetries, f.task("t", loop, "")))
	waitLines(t, a, alloc, "t", "run ", 1, 3*time.Minute)
	var out string
	waitFor(t, 2*time.Minute, "alloc status -stats to show memory and CPU stats", func() bool {
		out = cli(t, a, "", "alloc", "status", "-stats", alloc)
		return strings.Contains(out, "Memory Stats\n") && strings.Contains(out, "CPU Stats\n")
	})
	// What is measured (the sections' headers), not the figures.
	return lineAfter(out, "Memory Stats") + "\n" + lineAfter(out, "CPU Stats")
}

// lineAfter is the line following the line title in out, its columns'
// spacing folded.
func lineAfter(out, title string) string {
	ls := strings.Split(out, "\n")
	for i, l := range ls {
		if strings.TrimSpace(l) == title && i+1 < len(ls) {
			return strings.Join(strings.Fields(ls[i+1]), " ")
		}
	}
	return ""
}
