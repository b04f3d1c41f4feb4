package e2e

import (
	"os"
	"strings"
	"testing"
	"time"
)

// TestExampleRepoTemplate: the README's template that prepares something
// real, example/pools/exec-repo.nomad.hcl as shipped (a git repository
// cloned at warm-up, with a ready command for its checkout). A task handed
// one of its sandboxes finds the repository checked out and its history
// there, without waiting for a clone of its own.
func TestExampleRepoTemplate(t *testing.T) {
	template, err := os.ReadFile("../example/pools/exec-repo.nomad.hcl")
	if err != nil {
		t.Fatal(err)
	}
	// Nomad's default chroot_env, as an operator who installs the example
	// has: git needs more of /usr than slimChroot holds.
	a := readyAgentWith(t, string(template), "    size = 2\n    max = 4\n    claim_timeout = \"5m\"\n    ready_timeout = \"5m\"", "exec", "")
	const n = 2
	runJob(t, a, batchJob("repo-tasks", "ready", n, `git -C repo log -1 --format='commit: %s' && cat repo/main.py`))
	for _, al := range finishedAllocs(t, a, "repo-tasks", n, 6*time.Minute) {
		ts := al.TaskStates["agent"]
		code, ok := exitCode(ts)
		out := logs(t, a, al.ID, "agent")
		if !ok || code != 0 || !strings.Contains(out, "commit: initial") || !strings.Contains(out, "hello from the prepared repository") {
			t.Errorf("task %s: exit %d (%v), output %q; events:\n%s", al.ID[:8], code, ok, out, events(ts))
		}
	}
}
