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

// flapRun is how TestReadyFlappingNeverHandedOut runs on one runtime.
type flapRun struct {
	runtime string
	every   time.Duration // a task arrives this often
	// stamp prints "<time> $v", the time with sub-second digits: busybox's
	// date (docker's test image) has no %N; its ts gives microseconds.
	stamp string
	// slack: a verdict logged this long before the claim had reached the
	// pool (the check's answer crosses the launch session's exec stream,
	// through the container runtime under exec and docker, and one lock).
	// A pool that handed out a sandbox it knew stale still fails the test:
	// the checks before the one in flight failed too.
	slack time.Duration
	opts  string // the pool's options
}

var flapRuns = []flapRun{
	{runtime: "raw_exec", every: time.Second, stamp: `echo "$(date +%s%N) $v"`, slack: 50 * time.Millisecond,
		opts: "    size = 3\n    max = 8\n    claim_timeout = \"1m\"\n    ready_timeout = \"1m\""},
	// An exec sandbox takes 8-17 s to start on 2 busy cores, a gVisor one
	// a few: tasks arriving faster take each as it turns ready.
	{runtime: "exec", every: 3 * time.Second, stamp: `echo "$(date +%s%N) $v"`, slack: 200 * time.Millisecond,
		opts: "    size = 3\n    max = 8\n    claim_timeout = \"3m\"\n    ready_timeout = \"2m\""},
	{runtime: "runsc", every: 3 * time.Second, stamp: `echo "$v" | ts %.s`, slack: 200 * time.Millisecond,
		opts: "    size = 3\n    max = 8\n    claim_timeout = \"2m\"\n    ready_timeout = \"1m\""},
}

// TestReadyFlappingNeverHandedOut: a template whose sandbox is ready for 1
// to 3 s (at random) after its first check and then never again (a server
// that crashed), with a ready command asked every 200ms that logs each
// verdict with its time in the sandbox; on raw_exec, exec and docker with
// gVisor (whose clock agrees with the host's to under 1 ms). Once the pool
// has replaced a sandbox gone stale, tasks arrive one every 1 to 3 s while
// sandboxes turn ready and stale. The pool replaces a sandbox found not
// ready after it was, and hands none out: for no task was its sandbox's
// last verdict before the claim a failure. What the hand-out cannot know, a
// check in flight when the claim came, is left out by the slack. A task may
// also fail unstarted, when the pool counts as failing (every sandbox going
// stale is a template that fails): that is no hand-out either.
func TestReadyFlappingNeverHandedOut(t *testing.T) {
	for _, run := range flapRuns {
		t.Run(run.runtime, func(t *testing.T) { testReadyFlapping(t, run) })
	}
}

func testReadyFlapping(t *testing.T, run flapRun) {
	// The window opens at the first check, not at the start: the checks
	// begin once the pool has opened its launch session into the sandbox,
	// which took 5 s after an exec sandbox started on a busy machine.
	const script = `until [ -e "$NOMAD_ALLOC_DIR/checks" ]; do sleep 0.1; done; touch "$NOMAD_ALLOC_DIR/up"; ` +
		`sleep $(( $(od -An -N1 -tu1 /dev/urandom) % 3 + 1 )); rm -f "$NOMAD_ALLOC_DIR/up"; exec sleep infinity`
	ready := `v=fail; test -f "$NOMAD_ALLOC_DIR/up" && v=pass; ` + run.stamp + ` >> "$NOMAD_ALLOC_DIR/checks"; test $v = pass`
	template := sandboxTemplate(t, run.runtime, script, `meta {
        agentkernel_pool_ready          = `+hclString(ready)+`
        agentkernel_pool_ready_interval = "200ms"
      }`)
	a := readyAgent(t, template, run.opts, run.runtime)

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
	waitFor(t, 5*time.Minute, "the pool replacing a sandbox no longer ready", retired.Load)

	const waves, per = 12, 1
	for w := range waves {
		runJob(t, a, batchJob(fmt.Sprintf("flap-%d", w), "ready", per,
			`cat "$AGENTKERNEL_SANDBOX_ALLOC_DIR/checks"; echo checked`))
		time.Sleep(run.every)
	}
	stale, ran := 0, 0
	var excused []time.Duration // failures in flight at a claim, before it by
	for w := range waves {
		for _, al := range finishedAllocs(t, a, fmt.Sprintf("flap-%d", w), per, 5*time.Minute) {
			ts := al.TaskStates["agent"]
			var out string
			if !ts.StartedAt.IsZero() { // an unstarted task has no logs to read
				out = logs(t, a, al.ID, "agent")
			}
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
			last, when, inFlight := knownVerdict(out, claimed, run.slack)
			if last != "pass" {
				stale++
				t.Errorf("task %s got a sandbox whose last check before its claim at %s said %q (at %s); checks:\n%s",
					al.ID[:8], claimed.Format(time.StampMilli), last, when.Format(time.StampMilli), out)
			}
			if inFlight > 0 {
				excused = append(excused, inFlight)
			}
		}
	}
	t.Logf("%d tasks, %d ran, %d handed a sandbox not ready; failed checks taken as in flight at a claim (slack %s), logged before it by: %v",
		waves*per, ran, stale, run.slack, excused)
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
// the last "<time> pass|fail" line of out before claimed, leaving out the
// failures logged within slack of the claim (a check still in flight then,
// whose verdict the hand-out could not know); inFlight is how long before
// the claim the first of those was logged (0: none).
func knownVerdict(out string, claimed time.Time, slack time.Duration) (verdict string, when time.Time, inFlight time.Duration) {
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) != 2 || (f[1] != "pass" && f[1] != "fail") {
			continue
		}
		at, err := parseStamp(f[0])
		if err != nil || !at.Before(claimed) {
			continue
		}
		if f[1] == "fail" && claimed.Sub(at) < slack {
			inFlight = max(inFlight, claimed.Sub(at))
			continue
		}
		verdict, when = f[1], at
	}
	return verdict, when, inFlight
}

// parseStamp reads a time logged as unix nanoseconds (date +%s%N) or as
// unix seconds with a fraction (busybox ts %.s).
func parseStamp(s string) (time.Time, error) {
	sec, frac, dotted := strings.Cut(s, ".")
	if !dotted {
		ns, err := strconv.ParseInt(s, 10, 64)
		return time.Unix(0, ns), err
	}
	if len(frac) == 0 || len(frac) > 9 {
		return time.Time{}, fmt.Errorf("parse time %q: want 1 to 9 fraction digits", s)
	}
	whole, err := strconv.ParseInt(sec, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("parse time %q: %w", s, err)
	}
	ns, err := strconv.ParseInt(frac+strings.Repeat("0", 9-len(frac)), 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("parse time %q: %w", s, err)
	}
	return time.Unix(whole, ns), nil
}
