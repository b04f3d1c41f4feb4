package e2e

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-pool/internal/nomadtest"
)

// Parity with exec: the same job, run under Nomad's exec driver (the
// reference) and under a pool, must look the same to its user. A flavor is
// where a task runs; its task block differs only in driver and config.

// flavor is one place a parity test runs a task.
type flavor struct {
	name string // "exec", or the pool's name
	pool string // empty: Nomad's exec driver
}

var (
	underExec   = flavor{name: "exec"}
	execPool    = flavor{name: "exec-pool", pool: "box"}
	rawExecPool = flavor{name: "raw_exec-pool", pool: "raw"}
	parityPools = []flavor{execPool, rawExecPool}
)

// task is a task block running script under /bin/sh in this flavor; extra is
// put in the task block as is (kill_signal, lifecycle, ...).
func (f flavor) task(name, script, extra string) string {
	driver, pool := "exec", ""
	if f.pool != "" {
		driver, pool = "agentkernel-pool", fmt.Sprintf("        pool    = %q\n", f.pool)
	}
	return fmt.Sprintf(`    task %q {
      driver = %q
%s      config {
%s        command = "/bin/sh"
        args    = ["-c", %s]
      }
      resources {
        cpu    = 20
        memory = 32
      }
    }
`, name, driver, indent(extra, "      "), pool, hclString(script))
}

func indent(s, by string) string {
	if s == "" {
		return ""
	}
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = by + l
	}
	return strings.Join(lines, "\n") + "\n"
}

// parityJob is a job of one group holding tasks (task blocks); group is put
// in the group block as is (restart, reschedule, ...).
func parityJob(id, typ, group string, tasks ...string) string {
	return parityJobWith(id, typ, "", group, tasks...)
}

// parityJobWith is parityJob with job put in the job block as is
// (parameterized, ...).
func parityJobWith(id, typ, job, group string, tasks ...string) string {
	return fmt.Sprintf("job %q {\n  type = %q\n%s  group \"g\" {\n%s%s  }\n}\n", id, typ, indent(job, "  "), indent(group, "    "), strings.Join(tasks, ""))
}

// noRetries is a group's restart and reschedule blocks that end it at the
// first exit.
const noRetries = `restart {
  attempts = 0
  mode     = "fail"
}
reschedule {
  attempts  = 0
  unlimited = false
}
`

// parityClient is the client config of the parity agent: exec tasks (the
// reference's and the exec pool's sandboxes alike) in slimChroot, kill
// timeouts capped at maxKillTimeout.
const parityClient = `client {
  max_kill_timeout = "` + maxKillTimeout + `"
` + slimChroot + `}
`

// slimChroot is a client's chroot_env for exec tasks of a shell, coreutils
// and their libraries. Nomad's default (all of /usr, /lib, /etc, ...) is
// about 150,000 links per task dir on this machine (its /usr holds
// toolchains), which Nomad builds for every exec sandbox and deletes after
// it: 25-40 s per sandbox on a loaded 2-core machine, a minute per exec task
// in the parity tests. That is Nomad's cost of the host's /usr, the same for
// the pool and the reference; an operator trims it the same way.
const slimChroot = `  chroot_env {
    "/bin"                  = "/bin"
    "/usr/bin"              = "/usr/bin"
    "/etc"                  = "/etc"
    "/lib64"                = "/lib64"
    "/lib/x86_64-linux-gnu" = "/lib/x86_64-linux-gnu"
  }
`

// maxKillTimeout is the parity agent's client max_kill_timeout.
const maxKillTimeout = "8s"

// parityAgent starts an agent with two pools: "box" on the exec template
// and "raw" on the raw_exec one, warm with size each.
func parityAgent(t *testing.T, size, max int) *nomadtest.Agent {
	t.Helper()
	if _, err := nomadtest.Binary(); err != nil {
		t.Skipf("skipping e2e: %v", err)
	}
	if os.Geteuid() != 0 {
		t.Skip("skipping: the exec driver needs root")
	}
	var pools []string
	for _, p := range []struct{ name, template string }{{"box", "exec.nomad.hcl"}, {"raw", "raw_exec.nomad.hcl"}} {
		spec, err := filepath.Abs("../example/pools/" + p.template)
		if err != nil {
			t.Fatal(err)
		}
		pools = append(pools, fmt.Sprintf("  pool %q {\n    jobspec = %q\n    size = %d\n    max = %d\n    claim_timeout = \"90s\"\n  }\n", p.name, spec, size, max))
	}
	a := nomadtest.Start(t, nomadtest.Options{PluginDir: nomadtest.BuildPlugin(t), PluginConfig: "config {\n" + strings.Join(pools, "") + "}",
		ExtraConfig: parityClient})
	waitWarm(t, a, "box", size)
	waitWarm(t, a, "raw", size)
	return a
}

// lines are the lines of out that start with prefix.
func lines(out, prefix string) []string {
	var got []string
	for l := range strings.Lines(out) {
		if strings.HasPrefix(l, prefix) {
			got = append(got, strings.TrimSuffix(l, "\n"))
		}
	}
	return got
}

// stamp is a shell expression that prints the time in nanoseconds: the
// lines of one attempt differ from another's, and sort in the order they
// were printed.
const stamp = "$(date +%s%N)"

// stampedRE matches a line "<word> <stamp>".
var stampedRE = regexp.MustCompile(`^\S+ [0-9]{19}$`)

// inOrder reports whether the stamped lines are distinct and in the order
// they were printed.
func inOrder(ls []string) bool {
	for _, l := range ls {
		if !stampedRE.MatchString(l) {
			return false
		}
	}
	return slices.IsSorted(ls) && len(slices.Compact(slices.Clone(ls))) == len(ls)
}

// taskEvents follows an allocation's task events from now until the test
// ends: Nomad keeps only a task's last 10 events, fewer than a few attempts
// with the pool's own events make. It returns what it has seen of task's, in
// order.
func taskEvents(t *testing.T, a *nomadtest.Agent, allocID, task string) func() []*api.TaskEvent {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	seen := map[string]*api.TaskEvent{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		var index uint64
		for ctx.Err() == nil {
			al, meta, err := a.Client.Allocations().Info(allocID, (&api.QueryOptions{WaitIndex: index, WaitTime: 5 * time.Second}).WithContext(ctx))
			if err != nil {
				time.Sleep(200 * time.Millisecond)
				continue
			}
			index = meta.LastIndex
			if ts := al.TaskStates[task]; ts != nil {
				mu.Lock()
				for _, e := range ts.Events {
					seen[fmt.Sprintf("%d %s %s", e.Time, e.Type, e.DisplayMessage)] = e
				}
				mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return func() []*api.TaskEvent {
		// One more look: the last change may not have been read yet.
		if al, _, err := a.Client.Allocations().Info(allocID, nil); err == nil && al.TaskStates[task] != nil {
			mu.Lock()
			for _, e := range al.TaskStates[task].Events {
				seen[fmt.Sprintf("%d %s %s", e.Time, e.Type, e.DisplayMessage)] = e
			}
			mu.Unlock()
		}
		mu.Lock()
		defer mu.Unlock()
		evs := slices.Collect(maps.Values(seen))
		slices.SortStableFunc(evs, func(x, y *api.TaskEvent) int {
			switch {
			case x.Time < y.Time:
				return -1
			case x.Time > y.Time:
				return 1
			}
			return 0
		})
		return evs
	}
}

// eventsOnce is evs() once it holds want Terminated events, or after 30 s:
// the client sends task events to the servers in batches, so they can come
// after the log already shows the attempt they tell of.
func eventsOnce(evs func() []*api.TaskEvent, want int) []*api.TaskEvent {
	deadline := time.Now().Add(30 * time.Second)
	for {
		got := evs()
		if len(terminatedCodes(got)) >= want || time.Now().After(deadline) {
			return got
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// terminatedCodes are the exit codes of the Terminated events, in order.
func terminatedCodes(evs []*api.TaskEvent) []int {
	var codes []int
	for _, e := range evs {
		if e.Type == api.TaskTerminated {
			codes = append(codes, e.ExitCode)
		}
	}
	return codes
}

// eventList is evs for a failure message.
func eventList(evs []*api.TaskEvent) string {
	return events(&api.TaskState{Events: evs})
}

// stopJob deregisters and purges a job, so its allocations stop.
func stopJob(t *testing.T, a *nomadtest.Agent, id string) {
	t.Helper()
	if _, _, err := a.Client.Jobs().Deregister(id, true, nil); err != nil {
		t.Errorf("stop job %s: %v", id, err)
	}
}

// waitLines waits until the task's stdout holds want lines starting with
// prefix, and returns them.
func waitLines(t *testing.T, a *nomadtest.Agent, allocID, task, prefix string, want int, within time.Duration) []string {
	t.Helper()
	var got []string
	deadline := time.Now().Add(within)
	for {
		out, _, code := nomadCLI(t, a, "", "alloc", "logs", allocID, task)
		if code == 0 {
			got = lines(out, prefix)
			if len(got) >= want {
				return got
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %d lines %q in the logs of %s, want %d; stdout:\n%s", within, len(got), prefix, task, want, out)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
