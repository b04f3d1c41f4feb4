package e2e

import (
	"slices"
	"testing"
	"time"

	"github.com/agentkernel/agentkernel-pool/internal/nomadtest"
)

// TestOutputAcrossRestarts: every attempt of a task prints to its log, in
// order, under exec and under a pool alike, whichever way the task was
// restarted: its restart policy after a non-zero exit (each attempt's exit
// code in its Terminated event), `nomad alloc restart` of the task and of the
// whole allocation, and (pools only) its sandbox dying under it.
func TestOutputAcrossRestarts(t *testing.T) {
	a := parityAgent(t, 2, 6)
	flavors := []flavor{underExec, execPool, rawExecPool}

	t.Run("restart policy", func(t *testing.T) {
		for _, f := range flavors {
			t.Run(f.name, func(t *testing.T) {
				id := "e2e-retries-" + f.name
				group := "restart {\n  attempts = 2\n  interval = \"10m\"\n  delay    = \"1s\"\n  mode     = \"fail\"\n}\nreschedule {\n  attempts  = 0\n  unlimited = false\n}\n"
				alloc := runJob(t, a, parityJob(id, "batch", group, f.task("t", "echo attempt "+stamp+"; exit 1", "")))
				evs := taskEvents(t, a, alloc.ID, "t")
				waitTask(t, a, alloc.ID, "t", "dead", 5*time.Minute)
				got := lines(logs(t, a, alloc.ID, "t"), "attempt ")
				if len(got) != 3 || !inOrder(got) {
					t.Errorf("logs hold %q, want three attempts' lines in order; events:\n%s", got, eventList(evs()))
				}
				if codes := terminatedCodes(evs()); !slices.Equal(codes, []int{1, 1, 1}) {
					t.Errorf("Terminated exit codes %v, want [1 1 1]; events:\n%s", codes, eventList(evs()))
				}
				stopJob(t, a, id)
			})
		}
	})

	t.Run("alloc restart", func(t *testing.T) {
		for _, f := range flavors {
			t.Run(f.name, func(t *testing.T) {
				id := "e2e-restart-" + f.name
				alloc := runJob(t, a, parityJob(id, "batch", noRetries, f.task("t", "echo run "+stamp+"; while :; do sleep 0.2; done", "")))
				evs := taskEvents(t, a, alloc.ID, "t")
				waitTask(t, a, alloc.ID, "t", "running", 3*time.Minute)
				waitLines(t, a, alloc.ID, "t", "run ", 1, time.Minute)
				restart(t, a, alloc.ID, "t")
				waitLines(t, a, alloc.ID, "t", "run ", 2, 3*time.Minute)
				// A task keeps its last 10 events, and its client sends them in
				// batches: see the first restart's before the second comes.
				eventsOnce(evs, 1)
				restart(t, a, alloc.ID) // the whole allocation
				got := waitLines(t, a, alloc.ID, "t", "run ", 3, 3*time.Minute)
				if len(got) != 3 || !inOrder(got) {
					t.Errorf("logs hold %q, want three runs' lines in order", got)
				}
				// Which exit code a restart's kill leaves is the kill
				// signal's business (TestVerbs, "job stop"); here: one
				// Terminated event per restart.
				ev := eventsOnce(evs, 2)
				if codes := terminatedCodes(ev); len(codes) != 2 {
					t.Errorf("Terminated exit codes %v, want one per restart; events:\n%s", codes, eventList(ev))
				}
				stopJob(t, a, id)
			})
		}
	})

	t.Run("sandbox died", func(t *testing.T) {
		for _, f := range parityPools {
			t.Run(f.name, func(t *testing.T) {
				id := "e2e-died-" + f.name
				group := "restart {\n  attempts = 1\n  interval = \"10m\"\n  delay    = \"1s\"\n  mode     = \"fail\"\n}\nreschedule {\n  attempts  = 0\n  unlimited = false\n}\n"
				alloc := runJob(t, a, parityJob(id, "batch", group, f.task("t", "echo run "+stamp+"; while :; do sleep 0.2; done", "")))
				evs := taskEvents(t, a, alloc.ID, "t")
				ts := waitTask(t, a, alloc.ID, "t", "running", 3*time.Minute)
				waitLines(t, a, alloc.ID, "t", "run ", 1, time.Minute)
				sb := sandboxOf(ts)
				if sb == "" {
					t.Fatalf("no claimed sandbox in the events:\n%s", events(ts))
				}
				sa, _, err := a.Client.Allocations().Info(sb, nil)
				if err != nil {
					t.Fatalf("sandbox %s: %v", sb, err)
				}
				if _, _, err := a.Client.Jobs().Deregister(sa.JobID, false, nil); err != nil { // as an operator's job stop would
					t.Fatalf("stop sandbox job %s: %v", sa.JobID, err)
				}
				got := waitLines(t, a, alloc.ID, "t", "run ", 2, 3*time.Minute)
				if len(got) != 2 || !inOrder(got) {
					t.Errorf("logs hold %q, want both runs' lines in order", got)
				}
				ev := eventsOnce(evs, 1)
				if codes := terminatedCodes(ev); !slices.Equal(codes, []int{1}) {
					t.Errorf("Terminated exit codes %v, want [1] (the sandbox stopped from outside); events:\n%s", codes, eventList(ev))
				}
				stopJob(t, a, id)
			})
		}
	})
}

// restart runs `nomad alloc restart` on the allocation (on one task when given).
func restart(t *testing.T, a *nomadtest.Agent, allocID string, task ...string) {
	t.Helper()
	if _, errOut, code := nomadCLI(t, a, "", append([]string{"alloc", "restart", allocID}, task...)...); code != 0 {
		t.Fatalf("nomad alloc restart %s %v: %s", allocID, task, errOut)
	}
}
