package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/agentkernel/agentkernel-pool/internal/nomadtest"
	"github.com/agentkernel/agentkernel-pool/pool"
)

// TestHiddenRunsDoNotFreeTheSandbox, on an isolated (exec) pool: the command
// renames /alloc/.agentkernel, where its run is, and the plugin dies before
// the claim's record is written (the fault points of
// TestPluginKilledBeforeClaimRecorded). The restarted plugin never prepares
// that sandbox again (its hand-out mark is on the host, out of the
// sandbox's reach), and a second task gets another sandbox: two tasks never
// share one.
func TestHiddenRunsDoNotFreeTheSandbox(t *testing.T) {
	armed := filepath.Join(t.TempDir(), "hold-record")
	if err := os.WriteFile(armed, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv(pool.HoldRecordEnv, armed) // the agent passes its env to the plugin
	a := execPoolAgent(t, "dev", 1, 4)
	// The runs are hidden once the plugin is dead (it dies a second after
	// the start): a plugin that watches sees its run gone and ends the task.
	first := runJob(t, a, faultJob(t, "e2e-hide-runs", 0, "sleep 2; mv /alloc/.agentkernel /alloc/.elsewhere && echo hid; sleep 60"))
	waitFor(t, 60*time.Second, "the plugin to crash before the claim's record", func() bool {
		_, err := os.Stat(armed)
		return os.IsNotExist(err)
	})
	restarted := len(a.Log()) // what the plugin logs from here on is the new one's
	sb1 := sandboxOf(taskState(t, a, first.ID, "agent"))
	if sb1 == "" {
		t.Fatal("no claimed sandbox in the first task's events")
	}
	if n := len(claimVars(t, a, "dev")); n != 0 {
		t.Fatalf("%d claim records right after the crash, want 0 (the record was held back)", n)
	}
	host := filepath.Join(a.DataDir, "alloc", sb1)
	waitFor(t, 30*time.Second, "the command to hide its runs", func() bool {
		_, err := os.Stat(filepath.Join(host, "alloc", ".agentkernel"))
		return os.IsNotExist(err)
	})

	// Restarts: a replacement sandbox may take longer than a claim's
	// timeout to warm up on a busy host.
	second := runJob(t, a, faultJob(t, "e2e-hide-runs-2", 3, "echo second"))
	ts2 := waitTask(t, a, second.ID, "agent", "dead", 6*time.Minute)
	sb2 := sandboxOf(ts2)
	if sb2 == "" || sb2 == sb1 {
		t.Fatalf("the second task ran in sandbox %q, the first task's is %s; events:\n%s", sb2, sb1, events(ts2))
	}
	// The new plugin looked at the first sandbox (unless Nomad had it
	// purged first) and never prepared it.
	waitFor(t, 60*time.Second, "the new plugin to refuse or drop the first sandbox", func() bool {
		return regexp.MustCompile(`in use without a claim record.*alloc_id=`+sb1).MatchString(a.Log()[restarted:]) ||
			!liveWarmJob(t, a, allocJob(t, a, sb1))
	})
	after := a.Log()[restarted:]
	if regexp.MustCompile(`prepared warm allocation.*alloc_id=` + sb1).MatchString(after) {
		t.Errorf("the restarted plugin prepared sandbox %s, whose command hid its runs, for another task", sb1)
	}
	var said []string
	for _, line := range strings.Split(after, "\n") {
		if strings.Contains(line, sb1) && !strings.Contains(line, "http: request") {
			said = append(said, line)
		}
	}
	t.Logf("after the restart, the agent log says of sandbox %s:\n%s", sb1, strings.Join(said, "\n"))
	if strings.Contains(after, "in use without a claim record") {
		t.Logf("the restarted plugin found sandbox %s in use by its hand-out mark", sb1)
	} else {
		t.Logf("note: sandbox %s was released before the restarted plugin looked at it", sb1)
	}
	for _, id := range []string{"e2e-hide-runs", "e2e-hide-runs-2"} {
		if _, _, err := a.Client.Jobs().Deregister(id, true, nil); err != nil {
			t.Fatalf("purge job %s: %v", id, err)
		}
	}
	waitFor(t, 90*time.Second, "no claim after the purge", func() bool { return len(claimVars(t, a, "dev")) == 0 })
}

// allocJob is the job of an allocation, or "" when it is gone.
func allocJob(t *testing.T, a *nomadtest.Agent, allocID string) string {
	t.Helper()
	al, _, err := a.Client.Allocations().Info(allocID, nil)
	if err != nil {
		return ""
	}
	return al.JobID
}
