package e2e

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-pool/internal/nomadtest"
)

// Verbs of the matrix (verbs_test.go) on jobs and groups: dispatch, lifecycle
// tasks beside a sandbox task, and a group of two sandbox tasks.

// verbDispatch: `job dispatch` with a payload and meta; the command reads the
// payload from its file in local/ and the meta from its env.
func verbDispatch(t *testing.T, a *nomadtest.Agent, f flavor) string {
	id := verbJob(t)
	param := "parameterized {\n  payload       = \"required\"\n  meta_required = [\"who\"]\n}\n"
	task := f.task("t", `echo "payload=$(cat local/input.txt) who=$NOMAD_META_who"`, "dispatch_payload {\n  file = \"input.txt\"\n}\n")
	register(t, a, parityJobWith(id, "batch", param, noRetries, task))
	t.Cleanup(func() { stopJob(t, a, id) })
	out := cli(t, a, "the payload", "job", "dispatch", "-detach", "-meta", "who=me", id, "-")
	m := regexp.MustCompile(`Dispatched Job ID\s*=\s*(\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no dispatched job ID in:\n%s", out)
	}
	t.Cleanup(func() { stopJob(t, a, m[1]) })
	var alloc string
	waitFor(t, time.Minute, "an allocation of "+m[1], func() bool {
		allocs, _, err := a.Client.Jobs().Allocations(m[1], false, nil)
		if err == nil && len(allocs) > 0 {
			alloc = allocs[0].ID
		}
		return alloc != ""
	})
	ts := waitTask(t, a, alloc, "t", "dead", 3*time.Minute)
	got := logs(t, a, alloc, "t")
	if code, _ := exitCode(ts); got != "payload=the payload who=me\n" || code != 0 {
		t.Errorf("logs %q, exit code %d; want the payload and the meta; events:\n%s", got, code, events(ts))
	}
	return got
}

// register registers a job (a parameterized one has no allocation to wait for).
func register(t *testing.T, a *nomadtest.Agent, hcl string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	job, err := a.Client.Jobs().ParseHCLOpts(&api.JobsParseRequest{JobHCL: hcl, Canonicalize: true})
	if err != nil {
		t.Fatalf("parse job: %v", err)
	}
	if _, _, err := a.Client.Jobs().Register(job, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		t.Fatalf("register job: %v", err)
	}
}

// verbSidecars: a prestart sidecar runs before and beside the main task and
// is stopped (its handler runs) once the main task is done; then the
// poststop task runs. All three are tasks of the flavor.
func verbSidecars(t *testing.T, a *nomadtest.Agent, f flavor) string {
	id := verbJob(t)
	side := f.task("side", "echo side up; trap 'echo side stopped; exit 0' INT TERM; while :; do sleep 0.2; done", "lifecycle {\n  hook    = \"prestart\"\n  sidecar = true\n}\n")
	main := f.task("main", "echo main ran", "")
	post := f.task("post", "echo post ran", "lifecycle {\n  hook = \"poststop\"\n}\n")
	alloc := runVerbJob(t, a, id, parityJob(id, "batch", noRetries, side, main, post))
	var got []string
	for _, task := range []string{"side", "main", "post"} {
		ts := waitTask(t, a, alloc, task, "dead", 5*time.Minute)
		out := logs(t, a, alloc, task)
		if code, _ := exitCode(ts); code != 0 || ts.Failed {
			t.Errorf("task %s: exit code %d, failed %v; events:\n%s", task, code, ts.Failed, events(ts))
		}
		got = append(got, task+": "+out)
	}
	if want := "side: side up\nside stopped\n|main: main ran\n|post: post ran\n"; strings.Join(got, "|") != want {
		t.Errorf("logs %q, want %q", strings.Join(got, "|"), want)
	}
	al, _, err := a.Client.Allocations().Info(alloc, nil)
	if err != nil {
		t.Fatal(err)
	}
	side0, main0, post0 := al.TaskStates["side"], al.TaskStates["main"], al.TaskStates["post"]
	if !side0.StartedAt.Before(main0.StartedAt) || post0.StartedAt.Before(main0.FinishedAt) {
		t.Errorf("side started %s, main %s-%s, post started %s: want side before main and post after it",
			side0.StartedAt, main0.StartedAt, main0.FinishedAt, post0.StartedAt)
	}
	return strings.Join(got, "|")
}

// verbTwoTasks: a group of two tasks of the flavor; each runs once with its
// own name (two sandboxes, for a pool).
func verbTwoTasks(t *testing.T, a *nomadtest.Agent, f flavor) string {
	id := verbJob(t)
	script := "echo task=$NOMAD_TASK_NAME"
	alloc := runVerbJob(t, a, id, parityJob(id, "batch", noRetries, f.task("a", script, ""), f.task("b", script, "")))
	var got []string
	sandboxes := map[string]bool{}
	for _, task := range []string{"a", "b"} {
		ts := waitTask(t, a, alloc, task, "dead", 5*time.Minute)
		if code, _ := exitCode(ts); code != 0 {
			t.Errorf("task %s: exit code %d; events:\n%s", task, code, events(ts))
		}
		got = append(got, logs(t, a, alloc, task))
		sandboxes[sandboxOf(ts)] = true
	}
	if f.pool != "" && len(sandboxes) != 2 {
		t.Errorf("the two tasks ran in sandboxes %v, want two", sandboxes)
	}
	if strings.Join(got, "") != "task=a\ntask=b\n" {
		t.Errorf("logs %q, want each task's name", got)
	}
	return strings.Join(got, "")
}
