package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-pool/driver"
	"github.com/agentkernel/agentkernel-pool/internal/nodeattr"
	"github.com/agentkernel/agentkernel-pool/internal/nomadtest"
)

// brokenAgent starts an agent with two pools: "good" (the raw_exec
// template) and "broken" (the template written to a file the test may
// rewrite), and returns it with that file's path.
func brokenAgent(t *testing.T, broken string) (*nomadtest.Agent, string) {
	t.Helper()
	if _, err := nomadtest.Binary(); err != nil {
		t.Skipf("skipping e2e: %v", err)
	}
	spec := filepath.Join(t.TempDir(), "broken.nomad.hcl")
	if err := os.WriteFile(spec, []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	block := "config {\n" +
		"  pool \"good\" {\n    jobspec = \"" + rawExecTemplate(t) + "\"\n    size = 1\n    max = 4\n    claim_timeout = \"60s\"\n  }\n" +
		"  pool \"broken\" {\n    jobspec = \"" + spec + "\"\n    size = 2\n    max = 4\n    claim_timeout = \"60s\"\n  }\n}"
	a := nomadtest.Start(t, nomadtest.Options{PluginDir: nomadtest.BuildPlugin(t), PluginConfig: block})
	return a, spec
}

// rawExecWith is the raw_exec template with its command replaced, and extra
// text (a constraint, resources) added to its task.
func rawExecWith(t *testing.T, command, extra string) string {
	t.Helper()
	b, err := os.ReadFile(rawExecTemplate(t))
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(b), `command = "/bin/sleep"`, `command = "`+command+`"`, 1)
	return strings.Replace(s, `driver = "raw_exec"`, `driver = "raw_exec"`+"\n"+extra, 1)
}

// waitDriverDesc waits until the driver's health description satisfies ok
// and returns the driver's info.
func waitDriverDesc(t *testing.T, a *nomadtest.Agent, within time.Duration, what string, ok func(string) bool) *api.DriverInfo {
	t.Helper()
	d, found := a.WaitDriver(driver.Name, within, func(d *api.DriverInfo) bool { return ok(d.HealthDescription) })
	if !found {
		t.Fatalf("driver health never showed %s; last: %+v", what, d)
	}
	return d
}

// poolEvals counts the evaluations Nomad holds for a pool's warm instances,
// and how many instances (dispatched jobs) they belong to.
func poolEvals(t *testing.T, a *nomadtest.Agent, pool string) (evals, instances int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	prefix := "agentkernel-pool-" + pool + "-" + a.NodeID[:8] + "/dispatch-"
	list, _, err := a.Client.Evaluations().List((&api.QueryOptions{Filter: fmt.Sprintf("JobID matches %q", "^"+prefix)}).WithContext(ctx))
	if err != nil {
		t.Fatalf("list evaluations: %v", err)
	}
	jobs := map[string]bool{}
	for _, e := range list {
		jobs[e.JobID] = true
	}
	return len(list), len(jobs)
}

// TestBrokenTemplate: a pool whose template runs a command that does not
// exist, next to a working pool.
//   - Within a minute the driver's health description and the node attribute
//     driver.agentkernel-pool.pool.broken.error name the pool and Nomad's
//     reason (the missing executable); the driver stays healthy.
//   - A sandbox task on the broken pool fails at once with that reason,
//     not after its claim_timeout; one on the working pool runs.
//   - Re-dispatches back off: the instances and evaluations the broken
//     template costs stay bounded (figures logged).
//   - The template fixed on disk: the pool turns warm, the error goes, and a
//     task on it runs, with no agent restart.
func TestBrokenTemplate(t *testing.T) {
	const missing = "/no/such/agent-binary"
	a, spec := brokenAgent(t, rawExecWith(t, missing, ""))
	began := time.Now()

	d := waitDriverDesc(t, a, 90*time.Second, `pool "broken" failing`, func(desc string) bool {
		return strings.Contains(desc, `pool "broken" is failing`)
	})
	t.Logf("health after %s: %s", time.Since(began).Round(time.Second), d.HealthDescription)
	if !d.Healthy || !strings.Contains(d.HealthDescription, missing) || strings.Contains(d.HealthDescription, `pool "good"`) {
		t.Errorf("driver healthy=%v, description %q: want healthy, naming the broken pool and %s only", d.Healthy, d.HealthDescription, missing)
	}
	if time.Since(began) > 90*time.Second {
		t.Errorf("the failure took %s to show", time.Since(began))
	}
	node, err := a.Node(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	attr := nodeattr.Pool("broken", nodeattr.Error)
	if got := node.Attributes[attr]; !strings.Contains(got, missing) {
		t.Errorf("%s = %q, want the reason naming %s", attr, got, missing)
	}
	if got := node.Attributes[nodeattr.Pool("good", nodeattr.Error)]; got != "" {
		t.Errorf("the working pool has an error attribute: %q", got)
	}
	out := pluginStatus(t, a)
	if _, errs, found := strings.Cut(out, "Pool errors:"); !found || !strings.Contains(errs, " broken ") ||
		!strings.Contains(errs, missing) || strings.Contains(errs, " good ") {
		t.Errorf("status does not say why pool broken fails, or blames pool good:\n%s", out)
	}
	t.Logf("status:\n%s", out)

	failed := runJob(t, a, commandJob(t, "on-broken", "broken", "echo never"))
	ts := waitTask(t, a, failed.ID, "agent", "dead", 60*time.Second)
	ev := events(ts)
	if !ts.Failed || !strings.Contains(ev, "pool is failing") || !strings.Contains(ev, missing) || strings.Contains(ev, "after waiting") {
		t.Errorf("task on the broken pool: failed=%v, events:\n%s\nwant an at-once failure naming %s", ts.Failed, ev, missing)
	}

	waitWarm(t, a, "good", 1)
	served := runJob(t, a, commandJob(t, "on-good", "good", "echo served; exit 3"))
	ts = waitTask(t, a, served.ID, "agent", "dead", 60*time.Second)
	if code, ok := exitCode(ts); !ok || code != 3 || !strings.Contains(events(ts), "Claimed warm sandbox") {
		t.Errorf("task on the working pool: exit code %d (found %v), want 3 from a warm sandbox; events:\n%s", code, ok, events(ts))
	}

	// Let the backoff run for a while (E2E_BROKEN_FOR, default 2m; the
	// issue's bound was measured with 10m): one instance at a time, pauses
	// of 1, 2, 4, 8, 16, 32 s... up to 5 min, so the count grows with the
	// log of the time and then by one per 5 minutes.
	watch := 2 * time.Minute
	if v := os.Getenv("E2E_BROKEN_FOR"); v != "" {
		if watch, err = time.ParseDuration(v); err != nil {
			t.Fatalf("E2E_BROKEN_FOR: %v", err)
		}
	}
	time.Sleep(time.Until(began.Add(watch)))
	evals, instances := poolEvals(t, a, "broken")
	t.Logf("broken template in %s: %d instances dispatched, %d evaluations", time.Since(began).Round(time.Second), instances, evals)
	if limit := 12 + int(time.Since(began)/(5*time.Minute)); instances > limit || evals > 3*limit {
		t.Errorf("%d instances of the broken template and %d evaluations in %s: re-dispatch does not back off", instances, evals, time.Since(began).Round(time.Second))
	}
	if live := len(childJobs(t, a, "broken")); live > 2 {
		t.Errorf("%d jobs of the broken template left in Nomad; its dead instances are not purged", live)
	}

	fixed, err := os.ReadFile(rawExecTemplate(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(spec, fixed, 0o644); err != nil {
		t.Fatal(err)
	}
	fixedAt := time.Now()
	waitWarm(t, a, "broken", 2)
	d = waitDriverDesc(t, a, 30*time.Second, "ready", func(desc string) bool { return desc == "ready" })
	t.Logf("warm %s after the fix", time.Since(fixedAt).Round(time.Second))
	if got := d.Attributes[attr]; got != "" {
		t.Errorf("driver attribute %s = %q after the fix", attr, got)
	}
	node, err = a.Node(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got := node.Attributes[attr]; got != "" { // Nomad drops an empty attribute
		t.Errorf("node attribute %s = %q after the fix", attr, got)
	}
	ok := runJob(t, a, commandJob(t, "on-fixed", "broken", "exit 3"))
	ts = waitTask(t, a, ok.ID, "agent", "dead", 60*time.Second)
	if code, found := exitCode(ts); !found || code != 3 {
		t.Errorf("task on the fixed pool: exit code %d (found %v), want 3; events:\n%s", code, found, events(ts))
	}
}

// TestUnplaceableTemplate: a template the scheduler cannot place on the node
// (a constraint it does not meet) fails its pool at once with the
// scheduler's reason, and is not dispatched again and again.
func TestUnplaceableTemplate(t *testing.T) {
	const constraint = "constraint {\n        attribute = \"${attr.kernel.name}\"\n        value     = \"plan9\"\n      }"
	a, _ := brokenAgent(t, rawExecWith(t, "/bin/sleep", constraint))
	d := waitDriverDesc(t, a, 90*time.Second, `pool "broken" failing`, func(desc string) bool {
		return strings.Contains(desc, `pool "broken" is failing`)
	})
	t.Logf("health: %s", d.HealthDescription)
	if !strings.Contains(d.HealthDescription, "cannot be placed") || !strings.Contains(d.HealthDescription, "plan9") {
		t.Errorf("health description %q: want the placement failure naming the constraint", d.HealthDescription)
	}
	failed := runJob(t, a, commandJob(t, "on-unplaceable", "broken", "echo never"))
	ts := waitTask(t, a, failed.ID, "agent", "dead", 60*time.Second)
	if ev := events(ts); !ts.Failed || !strings.Contains(ev, "cannot be placed") {
		t.Errorf("task on the unplaceable pool: failed=%v, events:\n%s", ts.Failed, ev)
	}
	if _, instances := poolEvals(t, a, "broken"); instances > 2 {
		t.Errorf("%d instances of an unplaceable template; want the pool's size, left queued", instances)
	}
}

// childJobs lists the pool's dispatched jobs Nomad still holds, dead or not.
func childJobs(t *testing.T, a *nomadtest.Agent, pool string) []*api.JobListStub {
	t.Helper()
	jobs, _, err := a.Client.Jobs().List(&api.QueryOptions{Prefix: "agentkernel-pool-" + pool + "-" + a.NodeID[:8] + "/dispatch-"})
	if err != nil {
		t.Fatal(err)
	}
	return jobs
}
