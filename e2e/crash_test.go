package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentkernel/agentkernel-pool/driver"
	"github.com/agentkernel/agentkernel-pool/internal/nomadtest"
	"github.com/agentkernel/agentkernel-pool/pool"
)

// TestPluginKilledBetweenClaimAndLaunch: the plugin dies right after a start
// claimed a sandbox and before it launched the command (a fault point in the
// driver, armed by a file). Nomad starts the task again with a new plugin,
// which claims a sandbox: another one while the first claim, if its record
// was written, is freed (its sandbox purged) while the task runs; or the
// first one again, unused, if its record was not. The pool refills, the
// command ran once, and nothing is left after the job is purged. Whether the
// record's request leaves before the crash is a race; the "unwritten" run
// makes sure it does not (the pool's fault point holds it back).
func TestPluginKilledBetweenClaimAndLaunch(t *testing.T) {
	if _, err := nomadtest.Binary(); err != nil {
		t.Skipf("skipping e2e: %v", err)
	}
	t.Run("race", func(t *testing.T) { pluginKilledBetweenClaimAndLaunch(t, false) })
	t.Run("unwritten", func(t *testing.T) { pluginKilledBetweenClaimAndLaunch(t, true) })
}

func pluginKilledBetweenClaimAndLaunch(t *testing.T, unwritten bool) {
	armed := filepath.Join(t.TempDir(), "crash-after-claim")
	if err := os.WriteFile(armed, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv(driver.CrashAfterClaimEnv, armed) // the agent passes its env to the plugin
	hold := filepath.Join(t.TempDir(), "hold-record")
	if unwritten {
		if err := os.WriteFile(hold, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Setenv(pool.HoldRecordEnv, hold)
	}
	a := nomadtest.Start(t, nomadtest.Options{PluginDir: nomadtest.BuildPlugin(t),
		PluginConfig: poolBlock("dev", rawExecTemplate(t), 1, 4)})
	waitWarm(t, a, "dev", 1)
	before := warmJobs(t, a)
	if len(before) != 1 {
		t.Fatalf("want 1 warm job before the start, have %d", len(before))
	}
	first := before[0].ID
	pids := pluginPIDs(t, a)

	runs := filepath.Join(t.TempDir(), "runs")
	alloc := runJob(t, a, faultJob(t, "e2e-crash-claim", 2, "echo run >> "+runs+"; echo started; sleep 600"))
	waitFor(t, 60*time.Second, "the plugin to crash after the claim", func() bool {
		_, err := os.Stat(armed)
		return os.IsNotExist(err)
	})
	_ = os.Remove(hold) // the new plugin (the task restarts after 3 s) writes its records
	begin := time.Now()
	ts := waitTask(t, a, alloc.ID, "agent", "running", 90*time.Second)
	waitFor(t, 30*time.Second, "the command's output", func() bool { return strings.Contains(logs(t, a, alloc.ID, "agent"), "started") })
	t.Logf("task running %s after the crash; events:\n%s", time.Since(begin).Round(time.Millisecond), events(ts))
	if now := pluginPIDs(t, a); len(now) == 0 || slices.Equal(now, pids) {
		t.Errorf("plugin processes %v before, %v after: want a new one", pids, now)
	}
	sb := sandboxOf(taskState(t, a, alloc.ID, "agent"))
	if sb == "" {
		t.Fatalf("no claimed sandbox in the events:\n%s", events(ts))
	}

	// The pool writes a claim's record behind the hand-out, so the crash
	// leaves one of two states. The record's request left in time: the first
	// claim is orphaned and freed (its sandbox purged) while its owner runs
	// in another one. Or it did not: nothing ran in the first sandbox and
	// nothing marks it, so the restarted task may get it again.
	al, _, err := a.Client.Allocations().Info(sb, nil)
	if err != nil {
		t.Fatalf("read sandbox allocation %s: %v", sb, err)
	}
	var claims []string
	if unwritten && al.JobID != first {
		t.Errorf("the first claim's record was held back, yet the restarted task got sandbox %s of job %s, not the first one (%s)", sb, al.JobID, first)
	}
	if al.JobID == first {
		waitFor(t, 30*time.Second, "the reused sandbox's claim on record", func() bool {
			claims = claimVars(t, a, "dev")
			return len(claims) == 1 && strings.HasSuffix(claims[0], "/"+sb)
		})
		t.Logf("the first claim's record was never written: its sandbox %s, unused, went to the restarted task", sb)
	} else {
		waitFor(t, 90*time.Second, "the orphaned claim freed", func() bool {
			claims = claimVars(t, a, "dev")
			return len(claims) == 1 && strings.HasSuffix(claims[0], "/"+sb) && !liveWarmJob(t, a, first)
		})
		t.Logf("orphaned claim of %s freed %s after the crash; claims now %v", first, time.Since(begin).Round(time.Millisecond), claims)
		if !strings.Contains(a.Log(), "superseded by a newer claim of the same owner task") {
			t.Error("the agent log does not say why the claim was freed")
		}
	}
	waitWarm(t, a, "dev", 1)
	if b, _ := os.ReadFile(runs); strings.Count(string(b), "run") != 1 {
		t.Errorf("the command ran %d times, want once", strings.Count(string(b), "run"))
	}
	if ts := taskState(t, a, alloc.ID, "agent"); ts.State != "running" {
		t.Errorf("task %s after the cleanup, want running; events:\n%s", ts.State, events(ts))
	}

	// Other e2e runs on the same host may run a job of the same name: count only
	// this agent's processes (a path in its data dir in their environment).
	mine := func() []int { return processesWithEnv(a.DataDir+"/", "NOMAD_JOB_NAME=e2e-crash-claim") }
	if len(mine()) == 0 {
		t.Fatal("no process of the running job found by its environment: the check below would prove nothing")
	}
	if _, _, err := a.Client.Jobs().Deregister("e2e-crash-claim", true, nil); err != nil {
		t.Fatalf("purge job: %v", err)
	}
	waitFor(t, 60*time.Second, "no claim and one warm job after the purge", func() bool {
		return len(claimVars(t, a, "dev")) == 0 && len(warmJobs(t, a)) == 1
	})
	// The command was `sh -c "…; sleep 600"`: stopping sh must not leave its
	// sleep running (raw_exec on cgroups v1 would not end it by itself).
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		left := mine()
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes of the job left 30s after the purge:%s", describeProcesses(left))
		}
	}
}

// processesWithEnv lists the processes whose environment holds the variable kv
// and, anywhere, the string in.
func processesWithEnv(in, kv string) []int {
	var pids []int
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		env, err := os.ReadFile(d + "/environ")
		if err != nil || !strings.Contains(string(env), in) || !slices.Contains(strings.Split(string(env), "\x00"), kv) {
			continue
		}
		if pid, err := strconv.Atoi(filepath.Base(d)); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// liveWarmJob reports whether the dispatched warm job id still exists and is not dead.
func liveWarmJob(t *testing.T, a *nomadtest.Agent, id string) bool {
	t.Helper()
	j, _, err := a.Client.Jobs().Info(id, nil)
	if err != nil {
		return false // purged
	}
	return j.Status == nil || *j.Status != "dead"
}

// describeProcesses gives each pid's command line and parent, for a failure message.
func describeProcesses(pids []int) string {
	var b strings.Builder
	for _, pid := range pids {
		cmd, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
		stat, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		ppid := ""
		if f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:])); len(f) > 1 {
			ppid = f[1]
		}
		fmt.Fprintf(&b, "\n  pid %d (parent %s): %s", pid, ppid, strings.ReplaceAll(string(cmd), "\x00", " "))
	}
	return b.String()
}

// TestPluginKilledBeforeClaimRecorded: a warm start does not wait for its
// claim's record (write-behind). The plugin dies while a task runs and its
// record is still unwritten (fault points in the pool and the driver, armed
// by one file). The new plugin never hands that sandbox to another task (its
// run dir says it is in use), the recovered task adopts its claim, and the
// command finishes once, with all its output and its exit code.
func TestPluginKilledBeforeClaimRecorded(t *testing.T) {
	if _, err := nomadtest.Binary(); err != nil {
		t.Skipf("skipping e2e: %v", err)
	}
	armed := filepath.Join(t.TempDir(), "hold-record")
	if err := os.WriteFile(armed, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv(pool.HoldRecordEnv, armed) // the agent passes its env to the plugin
	a := nomadtest.Start(t, nomadtest.Options{PluginDir: nomadtest.BuildPlugin(t),
		PluginConfig: poolBlock("dev", rawExecTemplate(t), 1, 4)})
	waitWarm(t, a, "dev", 1)
	pids := pluginPIDs(t, a)

	runs := filepath.Join(t.TempDir(), "runs")
	first := runJob(t, a, faultJob(t, "e2e-crash-record", 0, "echo run >> "+runs+"; echo one; sleep 8; echo two; exit 3"))
	waitFor(t, 60*time.Second, "the plugin to crash before the claim's record", func() bool {
		_, err := os.Stat(armed)
		return os.IsNotExist(err)
	})
	if n := len(claimVars(t, a, "dev")); n != 0 {
		t.Fatalf("%d claim records right after the crash, want 0 (the record was held back)", n)
	}
	// Another task on the same pool at once: it must not get the first
	// task's sandbox, which has no record yet.
	second := runJob(t, a, faultJob(t, "e2e-crash-record-2", 0, "echo second; sleep 2"))
	ts1 := waitTask(t, a, first.ID, "agent", "dead", 120*time.Second)
	ts2 := waitTask(t, a, second.ID, "agent", "dead", 120*time.Second)
	sb1, sb2 := sandboxOf(ts1), sandboxOf(ts2)
	t.Logf("first task in %s, second in %s; first's events:\n%s", sb1, sb2, events(ts1))
	if sb1 == "" || sb2 == "" || sb1 == sb2 {
		t.Fatalf("sandboxes %q and %q: want two different ones", sb1, sb2)
	}
	if now := pluginPIDs(t, a); len(now) == 0 || slices.Equal(now, pids) {
		t.Errorf("plugin processes %v before, %v after: want a new one", pids, now)
	}
	if code, ok := exitCode(ts1); !ok || code != 3 {
		t.Errorf("first task's exit code %d (reported %v), want 3; events:\n%s", code, ok, events(ts1))
	}
	if out := logs(t, a, first.ID, "agent"); out != "one\ntwo\n" {
		t.Errorf("first task's output %q, want one and two once", out)
	}
	if b, _ := os.ReadFile(runs); strings.Count(string(b), "run") != 1 {
		t.Errorf("the command ran %d times, want once", strings.Count(string(b), "run"))
	}
	if !strings.Contains(a.Log(), "waiting for its claimer to adopt it") {
		t.Log("note: the new plugin adopted the claim before it primed the sandbox (the in-use path was not needed)")
	}
	for _, id := range []string{"e2e-crash-record", "e2e-crash-record-2"} {
		if _, _, err := a.Client.Jobs().Deregister(id, true, nil); err != nil {
			t.Fatalf("purge job %s: %v", id, err)
		}
	}
	waitFor(t, 60*time.Second, "no claim and one warm job after the purge", func() bool {
		return len(claimVars(t, a, "dev")) == 0 && len(warmJobs(t, a)) == 1
	})
}
