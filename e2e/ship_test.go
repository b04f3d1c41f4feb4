package e2e

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestOutputSurvivesKilledShipper: the task's output shipper (the `__ship`
// process that copies the command's output into Nomad's log FIFOs) is killed
// mid-task, alone or together with the plugin, as the OOM killer or an operator
// might. The command runs on; what it prints after the kill reaches
// `nomad alloc logs`, what it printed before appears once, the exit code is
// intact and the command ran once. (The plugin killed alone:
// TestPluginKilledMidTask; shipperPIDs, holderPIDs: boundary_test.go.)
func TestOutputSurvivesKilledShipper(t *testing.T) {
	a := sandboxAgent(t, 1, 4, false)
	for _, tc := range []struct {
		name       string
		killPlugin bool
	}{
		{"shipper alone", false},
		{"shipper and plugin", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			waitWarm(t, a, "dev", 1)
			job := "e2e-ship-" + strings.ReplaceAll(tc.name, " ", "-")
			marker := filepath.Join(t.TempDir(), "m")
			alloc := runJob(t, a, strings.Replace(jobHCL(t, "long.nomad.hcl", "MARKER", marker),
				`job "e2e-long"`, `job "`+job+`"`, 1))
			waitTask(t, a, alloc.ID, "agent", "running", 60*time.Second)
			waitFor(t, 30*time.Second, "first output", func() bool { return strings.Contains(logs(t, a, alloc.ID, "agent"), "before") })

			shippers, holders := shipperPIDs(alloc.ID), holderPIDs(alloc.ID)
			if len(shippers) != 1 || len(holders) != 1 {
				t.Fatalf("want one output shipper and one log holder of alloc %s, found shippers %v, holders %v", alloc.ID, shippers, holders)
			}
			victims := shippers
			if tc.killPlugin {
				victims = append(victims, pluginPIDs(t, a)...)
			}
			for _, pid := range victims { // back to back: no time to notice in between
				if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
					t.Fatalf("kill %d: %v", pid, err)
				}
			}
			waitFor(t, 60*time.Second, "a new output shipper", func() bool {
				now := shipperPIDs(alloc.ID)
				return len(now) == 1 && now[0] != shippers[0]
			})
			releaseLongRun(t, a, alloc.ID, marker, 60*time.Second)
			if s, h := shipperPIDs(alloc.ID), holderPIDs(alloc.ID); len(s)+len(h) > 0 {
				t.Errorf("the task is dead, but its shippers %v and log holders %v live on", s, h)
			}
			if _, _, err := a.Client.Jobs().Deregister(job, true, nil); err != nil {
				t.Errorf("purge %s: %v", job, err)
			}
		})
	}
}
