package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-pool/internal/nomadtest"
)

// Stopping verbs of the matrix (verbs_test.go): the kill signal and its
// timeout, max_kill_timeout, and alloc stop.

// verbStopDefault: a task without kill_signal is stopped with SIGINT under
// exec (Nomad's executors' default) and SIGTERM under a pool (the documented
// difference: the pool's command runs with SIGINT ignored, verbSignalInt).
func verbStopDefault(t *testing.T, a *nomadtest.Agent, f flavor) string {
	id := verbJob(t)
	script := "trap 'echo got INT; exit 0' INT; trap 'echo got TERM; exit 0' TERM; echo ready; while :; do sleep 0.2; done"
	alloc := runVerbJob(t, a, id, parityJob(id, "batch", noRetries, f.task("t", script, "")))
	waitLog(t, a, alloc, "t", "ready\n", 3*time.Minute)
	cli(t, a, "", "job", "stop", "-detach", id)
	ts := waitTask(t, a, alloc, "t", "dead", 2*time.Minute)
	out := logs(t, a, alloc, "t")
	want := "ready\ngot INT\n"
	if f.pool != "" {
		want = "ready\ngot TERM\n"
	}
	if code, _ := exitCode(ts); out != want || code != 0 {
		t.Errorf("logs %q, exit code %d; want %q and the handler's 0; events:\n%s", out, code, want, events(ts))
	}
	return out
}

// verbStopHandler: `job stop` sends the task's kill_signal, and the command's
// handler has its time (within kill_timeout) to finish and choose the exit code.
func verbStopHandler(t *testing.T, a *nomadtest.Agent, f flavor) string {
	id := verbJob(t)
	script := "trap 'echo got USR1; sleep 1; echo handler done; exit 7' USR1; echo ready; while :; do sleep 0.2; done"
	extra := "kill_signal  = \"SIGUSR1\"\nkill_timeout = \"" + maxKillTimeout + "\"\n"
	alloc := runVerbJob(t, a, id, parityJob(id, "batch", noRetries, f.task("t", script, extra)))
	evs := taskEvents(t, a, alloc, "t")
	waitLog(t, a, alloc, "t", "ready\n", 3*time.Minute)
	cli(t, a, "", "job", "stop", "-detach", id)
	waitTask(t, a, alloc, "t", "dead", 2*time.Minute)
	out := logs(t, a, alloc, "t")
	codes := terminatedCodes(evs())
	if out != "ready\ngot USR1\nhandler done\n" || !slices.Equal(codes, []int{7}) {
		t.Errorf("logs %q, exit codes %v; want the handler's lines and its exit code 7; events:\n%s", out, codes, eventList(evs()))
	}
	return out
}

// verbStopKill: a command whose handler does not exit is killed with SIGKILL
// once kill_timeout has passed, not before.
func verbStopKill(t *testing.T, a *nomadtest.Agent, f flavor) string {
	return stopAndKill(t, a, f, "3s", 3*time.Second)
}

// verbMaxKillTimeout: the client's max_kill_timeout caps a task's longer
// kill_timeout.
func verbMaxKillTimeout(t *testing.T, a *nomadtest.Agent, f flavor) string {
	limit, err := time.ParseDuration(maxKillTimeout)
	if err != nil {
		t.Fatal(err)
	}
	return stopAndKill(t, a, f, "1h", limit)
}

// stopAndKill stops a job whose command handles its kill signal without
// exiting and checks that it was SIGKILLed no sooner than after wait (less a
// second for the two events' clocks) and long before an hour; it returns the
// logs and the Killing event's text, which names the timeout used.
func stopAndKill(t *testing.T, a *nomadtest.Agent, f flavor, killTimeout string, wait time.Duration) string {
	id := verbJob(t)
	script := "trap 'echo got USR1' USR1; echo ready; while :; do sleep 0.2; done"
	extra := "kill_signal  = \"SIGUSR1\"\nkill_timeout = \"" + killTimeout + "\"\n"
	alloc := runVerbJob(t, a, id, parityJob(id, "batch", noRetries, f.task("t", script, extra)))
	evs := taskEvents(t, a, alloc, "t")
	waitLog(t, a, alloc, "t", "ready\n", 3*time.Minute)
	cli(t, a, "", "job", "stop", "-detach", id)
	waitTask(t, a, alloc, "t", "dead", 5*time.Minute)
	out := logs(t, a, alloc, "t")
	killing, terminated := event(evs(), api.TaskKilling), event(evs(), api.TaskTerminated)
	if killing == nil || terminated == nil {
		t.Fatalf("no Killing and Terminated events:\n%s", eventList(evs()))
	}
	took := time.Duration(terminated.Time - killing.Time)
	if out != "ready\ngot USR1\n" || terminated.ExitCode != 137 || terminated.Signal != 9 || took < wait-time.Second || took > 30*time.Minute {
		t.Errorf("logs %q, exit code %d signal %d %s after the kill signal; want the handler's line and SIGKILL after %s; events:\n%s",
			out, terminated.ExitCode, terminated.Signal, took, wait, eventList(evs()))
	}
	return fmt.Sprintf("%s%s: exit %d", out, killing.DisplayMessage, terminated.ExitCode)
}

// event is the first event of type typ.
func event(evs []*api.TaskEvent, typ string) *api.TaskEvent {
	for _, e := range evs {
		if e.Type == typ {
			return e
		}
	}
	return nil
}

// verbAllocStop: `alloc stop` stops the allocation, and Nomad places a new
// one, whose task runs afresh.
func verbAllocStop(t *testing.T, a *nomadtest.Agent, f flavor) string {
	id := verbJob(t)
	old := runVerbJob(t, a, id, parityJob(id, "service", "", f.task("t", loop, "")))
	waitLines(t, a, old, "t", "run ", 1, 3*time.Minute)
	cli(t, a, "", "alloc", "stop", "-detach", old)
	waitTask(t, a, old, "t", "dead", 2*time.Minute)
	var next string
	waitFor(t, 3*time.Minute, "a new allocation of "+id+" running", func() bool {
		allocs, _, err := a.Client.Jobs().Allocations(id, false, nil)
		if err != nil {
			return false
		}
		for _, al := range allocs {
			if al.ID != old && al.ClientStatus == api.AllocClientStatusRunning {
				next = al.ID
				return true
			}
		}
		return false
	})
	got := waitLines(t, a, next, "t", "run ", 1, 3*time.Minute)
	if len(got) != 1 || !strings.HasPrefix(got[0], "run ") {
		t.Errorf("the new allocation's logs: %q, want one run", got)
	}
	if st := taskState(t, a, old, "t"); st.Failed {
		t.Errorf("the stopped allocation's task failed; events:\n%s", events(st))
	}
	return "replaced"
}
