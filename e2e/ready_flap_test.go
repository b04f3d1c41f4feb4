package e2e

import (
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"
)

// TestReadyFlappingNeverHandedOut: a template whose sandbox is ready for 1 to
// 3 s after its start (at random) and then never again (a server that
// crashed), with a ready command asked every 200ms that logs each verdict
// with its time in the sandbox. Tasks arrive one a second while sandboxes
// turn ready and stale. The pool replaces a sandbox found not ready after it
// was, and hands none out: for no task was its sandbox's last verdict before
// the claim a failure. What the hand-out cannot know, a check in flight when
// the claim came, is left out by the slack below. A task may also fail
// unstarted, when the pool counts as failing (every sandbox going stale is
// a template that fails): that is no hand-out either.
func TestReadyFlappingNeverHandedOut(t *testing.T) {
	const template = `job "ready-flap" {
  group "sandbox" {
    task "sandbox" {
      driver = "raw_exec"
      config {
        command = "/bin/sh"
        args    = ["-c", "touch \"$NOMAD_ALLOC_DIR/up\"; sleep $(( $(od -An -N1 -tu1 /dev/urandom) % 3 + 1 )); rm -f \"$NOMAD_ALLOC_DIR/up\"; exec sleep infinity"]
      }
      meta {
        agentkernel_pool_ready          = "v=fail; test -f \"$NOMAD_ALLOC_DIR/up\" && v=pass; echo \"$(date +%s%N) $v\" >> \"$NOMAD_ALLOC_DIR/checks\"; test $v = pass"
        agentkernel_pool_ready_interval = "200ms"
      }
      resources {
        cpu    = 20
        memory = 16
      }
    }
  }
}
`
	// slack: a verdict logged this long before the claim had reached the
	// pool (the check's answer crosses the launch session and one lock).
	const slack = 50 * time.Millisecond
	a := readyAgent(t, template, "    size = 3\n    max = 8\n    claim_timeout = \"1m\"\n    ready_timeout = \"1m\"", "raw_exec")

	var retired atomic.Bool // the pool said a sandbox was no longer ready
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			if strings.Contains(readyAttr(a, "ready", "error"), "no longer ready") {
				retired.Store(true)
			}
			select {
			case <-done:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	defer func() { close(done); <-stopped }()

	const waves, per = 12, 1
	for w := range waves {
		runJob(t, a, batchJob(fmt.Sprintf("flap-%d", w), "ready", per,
			`cat "$AGENTKERNEL_SANDBOX_ALLOC_DIR/checks"; echo checked`))
		time.Sleep(time.Second)
	}
	stale, ran := 0, 0
	for w := range waves {
		for _, al := range finishedAllocs(t, a, fmt.Sprintf("flap-%d", w), per, 3*time.Minute) {
			ts := al.TaskStates["agent"]
			out := logs(t, a, al.ID, "agent")
			code, ok := exitCode(ts)
			if !strings.Contains(out, "checked") {
				if ev := events(ts); sandboxOf(ts) != "" || !strings.Contains(ev, "no longer ready") {
					t.Errorf("task %s did not run, and not for want of a ready sandbox: exit %d (%v), output %q; events:\n%s", al.ID[:8], code, ok, out, ev)
				}
				continue
			}
			ran++
			if !ok || code != 0 {
				t.Errorf("task %s: exit %d (%v), output %q; events:\n%s", al.ID[:8], code, ok, out, events(ts))
			}
			claimed := claimTime(ts)
			if claimed.IsZero() {
				t.Errorf("task %s: no claim in its events:\n%s", al.ID[:8], events(ts))
				continue
			}
			last, when := knownVerdict(out, claimed, slack)
			if last != "pass" {
				stale++
				t.Errorf("task %s got a sandbox whose last check before its claim at %s said %q (at %s); checks:\n%s",
					al.ID[:8], claimed.Format(time.StampMilli), last, when.Format(time.StampMilli), out)
			}
		}
	}
	t.Logf("%d tasks, %d ran, %d handed a sandbox not ready; a sandbox replaced as no longer ready: %v", waves*per, ran, stale, retired.Load())
	if !retired.Load() {
		t.Errorf("the pool never said a sandbox was no longer ready: the test did not flap")
	}
	if ran < 3 {
		t.Errorf("only %d tasks ran: too few hand-outs to tell anything", ran)
	}
}

// claimTime is when the task's sandbox was claimed (the driver's event).
func claimTime(ts *api.TaskState) time.Time {
	for _, e := range ts.Events {
		if e.Details["sandbox_alloc_id"] != "" && (strings.Contains(e.DisplayMessage, "Claimed warm sandbox") || strings.Contains(e.DisplayMessage, "miss:")) {
			return time.Unix(0, e.Time)
		}
	}
	return time.Time{}
}

// knownVerdict is what the pool knew of the sandbox when it was claimed:
// the last "<unix ns> pass|fail" line of out before claimed, leaving out the
// failures logged within slack of the claim (a check still in flight then,
// whose verdict the hand-out could not know).
func knownVerdict(out string, claimed time.Time, slack time.Duration) (verdict string, when time.Time) {
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) != 2 || (f[1] != "pass" && f[1] != "fail") {
			continue
		}
		ns, err := strconv.ParseInt(f[0], 10, 64)
		at := time.Unix(0, ns)
		if err != nil || !at.Before(claimed) || (f[1] == "fail" && claimed.Sub(at) < slack) {
			continue
		}
		verdict, when = f[1], at
	}
	return verdict, when
}
