package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-pool/driver"
	"github.com/agentkernel/agentkernel-pool/internal/nodeattr"
	"github.com/agentkernel/agentkernel-pool/internal/nomadtest"
)

// sandboxAgent starts an agent with the plugin and one raw_exec pool "dev", and
// waits until the pool has warm allocations.
func sandboxAgent(t *testing.T, size, max int, persistent bool) *nomadtest.Agent {
	t.Helper()
	if _, err := nomadtest.Binary(); err != nil {
		t.Skipf("skipping e2e: %v", err)
	}
	a := nomadtest.Start(t, nomadtest.Options{PluginDir: nomadtest.BuildPlugin(t), Persistent: persistent,
		PluginConfig: poolBlock("dev", rawExecTemplate(t), size, max)})
	waitWarm(t, a, "dev", size)
	return a
}

// waitWarm waits for the node attribute that says how many warm allocations a pool has.
func waitWarm(t testing.TB, a *nomadtest.Agent, pool string, want int) {
	t.Helper()
	waitWarmWithin(t, a, pool, want, 90*time.Second)
}

// waitWarmWithin is waitWarm for templates that may take longer to start.
func waitWarmWithin(t testing.TB, a *nomadtest.Agent, pool string, want int, within time.Duration) {
	t.Helper()
	key := nodeattr.Pool(pool, nodeattr.Warm)
	deadline := time.Now().Add(within)
	var got string
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		n, err := a.Node(ctx)
		cancel()
		if err == nil {
			got = n.Attributes[key]
			if got == itoa(want) {
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	d, _ := a.WaitDriver(driver.Name, time.Second, func(*api.DriverInfo) bool { return true })
	t.Fatalf("%s = %q, want %d (driver: %+v)", key, got, want, d)
}

// commandJob is jobs/command.nomad.hcl as job name on pool, running script.
func commandJob(t testing.TB, name, pool, script string) string {
	t.Helper()
	return jobHCL(t, "command.nomad.hcl", `job "e2e-command"`, `job "`+name+`"`, `pool    = "dev"`, `pool    = "`+pool+`"`,
		`"echo out:$GREETING; echo err:$GREETING >&2; exit 3"`, hclString(script))
}

// runJob parses and registers a jobspec (HCL text) and returns its first allocation.
func runJob(t testing.TB, a *nomadtest.Agent, hcl string) *api.Allocation {
	t.Helper()
	return runJobWith(t, a.Client, hcl)
}

// runJobWith registers a job through c (whose namespace it uses) and returns
// its first allocation.
func runJobWith(t testing.TB, c *api.Client, hcl string) *api.Allocation {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	job, err := c.Jobs().ParseHCLOpts(&api.JobsParseRequest{JobHCL: hcl, Canonicalize: true})
	if err != nil {
		t.Fatalf("parse job: %v", err)
	}
	if _, _, err := c.Jobs().Register(job, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		t.Fatalf("register job: %v", err)
	}
	var alloc *api.Allocation
	waitFor(t, 60*time.Second, "an allocation of job "+*job.ID, func() bool {
		allocs, _, err := c.Jobs().Allocations(*job.ID, false, nil)
		if err == nil && len(allocs) > 0 {
			alloc, _, err = c.Allocations().Info(allocs[0].ID, nil)
			return err == nil
		}
		return false
	})
	return alloc
}

// waitTask waits until the task reaches state ("running" or "dead") and returns it.
func waitTask(t testing.TB, a *nomadtest.Agent, allocID, task, state string, within time.Duration) *api.TaskState {
	t.Helper()
	var ts *api.TaskState
	waitFor(t, within, "task "+task+" "+state, func() bool {
		al, _, err := a.Client.Allocations().Info(allocID, nil)
		if err != nil {
			return false
		}
		ts = al.TaskStates[task]
		return ts != nil && ts.State == state
	})
	return ts
}

// exitCode is the exit code of the task's last Terminated event.
func exitCode(ts *api.TaskState) (int, bool) {
	for i := len(ts.Events) - 1; i >= 0; i-- {
		if ts.Events[i].Type == api.TaskTerminated {
			return ts.Events[i].ExitCode, true
		}
	}
	return 0, false
}

func events(ts *api.TaskState) string {
	var b strings.Builder
	for _, e := range ts.Events {
		b.WriteString(e.Type + ": " + e.DisplayMessage + "\n")
	}
	return b.String()
}

// nomadCLI runs the nomad CLI against the agent, as a user would (with the
// bootstrap token when ACLs are on).
func nomadCLI(t *testing.T, a *nomadtest.Agent, stdin string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, nomadBin(t), args...)
	cmd.Env = append(os.Environ(), "NOMAD_ADDR="+a.Addr)
	if a.Token != "" { // ACLs on: act as the operator
		cmd.Env = append(cmd.Env, "NOMAD_TOKEN="+a.Token)
	}
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("nomad %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

func logs(t *testing.T, a *nomadtest.Agent, allocID, task string) string {
	t.Helper()
	out, errOut, code := nomadCLI(t, a, "", "alloc", "logs", allocID, task)
	if code != 0 {
		t.Fatalf("nomad alloc logs: %s", errOut)
	}
	return out
}

// warmJobs lists the pool's dispatched warm instances still registered, in
// whichever namespace the plugin keeps them.
func warmJobs(t *testing.T, a *nomadtest.Agent) []*api.JobListStub {
	t.Helper()
	jobs, _, err := a.Client.Jobs().List(&api.QueryOptions{Prefix: "agentkernel-pool-", Namespace: "*"})
	if err != nil {
		t.Fatal(err)
	}
	var out []*api.JobListStub
	for _, j := range jobs {
		if j.ParentID != "" && j.Status != "dead" {
			out = append(out, j)
		}
	}
	return out
}

func waitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s", within, what)
}

// pluginPIDs finds the agent's running plugin processes.
func pluginPIDs(t *testing.T, a *nomadtest.Agent) []int {
	t.Helper()
	return a.Processes(driver.Name)
}
