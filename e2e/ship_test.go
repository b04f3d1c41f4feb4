package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agentkernel/agentkernel-pool/internal/nomadtest"
)

// TestOutputSurvivesKills: mid-task, while the command prints a numbered line
// every 10 ms on stdout and stderr, the task's output shipper (the `__ship`
// process that copies the command's output into Nomad's log FIFOs) is killed
// alone, or together with the plugin, or the plugin alone, or the task's log
// holder (`__hold`, which keeps the FIFOs open) and later the shipper, as the
// OOM killer or an operator might. The command runs on, once; every line it printed reaches
// `nomad alloc logs` on both streams, in order, with at most a block repeated
// where output was shipped again; the exit code is intact; no shipper or log
// holder of the task is left once it is dead.
func TestOutputSurvivesKills(t *testing.T) {
	a := sandboxAgent(t, 1, 4, false)
	for _, tc := range []struct {
		name                            string
		holderFirst, shipper, thePlugin bool
	}{
		{"shipper alone", false, true, false},
		{"shipper and plugin", false, true, true},
		{"plugin alone", false, false, true},
		{"log holder, then shipper", true, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			waitWarm(t, a, "dev", 1)
			job := "e2e-kill-" + strings.NewReplacer(" ", "-", ",", "").Replace(tc.name)
			marker := filepath.Join(t.TempDir(), "m")
			alloc := runJob(t, a, jobHCL(t, "stream.nomad.hcl", "JOBNAME", job, "MARKER", marker))
			waitTask(t, a, alloc.ID, "agent", "running", 60*time.Second)
			waitFor(t, 30*time.Second, "first output", func() bool { return strings.Contains(logs(t, a, alloc.ID, "agent"), "n 5\n") })

			shippers, holders := shipperPIDs(alloc.ID), holderPIDs(alloc.ID)
			if len(shippers) != 1 || len(holders) != 1 {
				t.Fatalf("want one output shipper and one log holder of alloc %s, found shippers %v, holders %v", alloc.ID, shippers, holders)
			}
			if tc.holderFirst { // the plugin starts a new one; the shipper holds the logs meanwhile
				if err := syscall.Kill(holders[0], syscall.SIGKILL); err != nil {
					t.Fatalf("kill log holder %d: %v", holders[0], err)
				}
				waitFor(t, 30*time.Second, "a new log holder", func() bool {
					now := holderPIDs(alloc.ID)
					return len(now) == 1 && now[0] != holders[0]
				})
			}
			var victims []int
			if tc.shipper {
				victims = append(victims, shippers...)
			}
			plugins := pluginPIDs(t, a)
			if tc.thePlugin {
				victims = append(victims, plugins...)
			}
			for _, pid := range victims { // back to back: no time to notice in between
				if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
					t.Fatalf("kill %d: %v", pid, err)
				}
			}
			printed := func() int { return highestNumbered(t, logs(t, a, alloc.ID, "agent"), "n ") }
			atKill := printed()
			waitFor(t, 60*time.Second, "output from after the kill", func() bool { return printed() > atKill+50 })
			if tc.thePlugin && slices.Equal(pluginPIDs(t, a), plugins) {
				t.Errorf("plugin processes %v before the kill, %v after: want a new one", plugins, pluginPIDs(t, a))
			}
			if err := os.WriteFile(marker+".release", nil, 0o644); err != nil {
				t.Fatal(err)
			}
			ts := waitTask(t, a, alloc.ID, "agent", "dead", 60*time.Second)
			if code, _ := exitCode(ts); code != 7 {
				t.Errorf("exit code %d, want 7; events:\n%s", code, events(ts))
			}
			for _, stream := range []struct{ name, prefix string }{{"stdout", "n "}, {"stderr", "e "}} {
				out := allocLogs(t, a, alloc.ID, stream.name)
				if repeated, err := checkNumbered(out, stream.prefix); err != nil {
					t.Errorf("%s: %v", stream.name, err)
				} else {
					t.Logf("%s: every line arrived, in order; %d repeated", stream.name, repeated)
				}
			}
			if runs, _ := os.ReadFile(marker + ".runs"); strings.Count(string(runs), "run") != 1 {
				t.Errorf("the command ran %d times, want once", strings.Count(string(runs), "run"))
			}
			if s, h := shipperPIDs(alloc.ID), holderPIDs(alloc.ID); len(s)+len(h) > 0 {
				t.Errorf("the task is dead, but its shippers %v and log holders %v live on", s, h)
			}
			if _, _, err := a.Client.Jobs().Deregister(job, true, nil); err != nil {
				t.Errorf("purge %s: %v", job, err)
			}
		})
	}
}

// allocLogs is the task's stdout or stderr as `nomad alloc logs` shows it.
func allocLogs(t *testing.T, a *nomadtest.Agent, allocID, stream string) string {
	t.Helper()
	args := []string{"alloc", "logs"}
	if stream == "stderr" {
		args = append(args, "-stderr")
	}
	out, errOut, code := nomadCLI(t, a, "", append(args, allocID, "agent")...)
	if code != 0 {
		t.Fatalf("nomad alloc logs: %s", errOut)
	}
	return out
}

// highestNumbered is the highest n of the lines "<prefix><n>" in out, or -1.
func highestNumbered(t *testing.T, out, prefix string) int {
	t.Helper()
	last := -1
	for _, l := range strings.Split(out, "\n") {
		if n, err := strconv.Atoi(strings.TrimPrefix(l, prefix)); err == nil && strings.HasPrefix(l, prefix) && n > last {
			last = n
		}
	}
	return last
}

// checkNumbered checks that out is "<prefix>0" ... "<prefix>k-1" then "last k",
// each line whole, in order, except that the sequence may go back once (output
// shipped again after a kill); it returns how many lines were repeated.
func checkNumbered(out, prefix string) (repeated int, err error) {
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) == 0 || !strings.HasPrefix(lines[len(lines)-1], "last ") {
		return 0, fmt.Errorf("the output does not end with the command's last line: %q", lastFew(lines))
	}
	want, err := strconv.Atoi(strings.TrimPrefix(lines[len(lines)-1], "last "))
	if err != nil {
		return 0, fmt.Errorf("last line %q", lines[len(lines)-1])
	}
	next, backs := 0, 0
	for i, l := range lines[:len(lines)-1] {
		n, err := strconv.Atoi(strings.TrimPrefix(l, prefix))
		if err != nil || !strings.HasPrefix(l, prefix) {
			return 0, fmt.Errorf("line %d is %q, want %s%d", i, l, prefix, next)
		}
		switch {
		case n == next:
		case n < next && backs == 0:
			backs, repeated = 1, next-n
		default:
			return 0, fmt.Errorf("line %d is %q after %s%d: lines are missing or out of order", i, l, prefix, next-1)
		}
		next = n + 1
	}
	if next != want {
		return 0, fmt.Errorf("the lines stop at %s%d, but the command printed %d", prefix, next-1, want)
	}
	return repeated, nil
}

func lastFew(lines []string) []string { return lines[max(0, len(lines)-3):] }
