package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-pool/driver"
	"github.com/agentkernel/agentkernel-pool/internal/nomadtest"
)

// TestAgentRestartWithConfigUnusable: the agent restarts mid-task while the
// plugin config is unusable: a pool's template file is gone, or token_file is
// not there, or the API address the plugin uses does not answer. The task is
// recovered from its handle alone and keeps running while the driver is
// unhealthy; its command finishes meanwhile. Once things are back, with no
// further restart, the task reports its exit code and all its output, once,
// and the command ran once.
func TestAgentRestartWithConfigUnusable(t *testing.T) {
	for _, broken := range []string{"jobspec", "token_file", "address"} {
		t.Run(broken, func(t *testing.T) {
			if _, err := nomadtest.Binary(); err != nil {
				t.Skipf("skipping e2e: %v", err)
			}
			var a *nomadtest.Agent
			var file string // what is taken away during the restart
			readLogs := func(allocID string) string { return logs(t, a, allocID, "agent") }
			var fwd *forwarder
			switch broken {
			case "address":
				fwd = newForwarder(t)
				a = nomadtest.Start(t, nomadtest.Options{PluginDir: nomadtest.BuildPlugin(t), Persistent: true,
					PluginConfig: strings.Replace(poolBlock("dev", rawExecTemplate(t), 1, 4), "config {\n",
						"config {\n  address = \""+fwd.url()+"\"\n", 1)})
				fwd.open(t, strings.TrimPrefix(a.Addr, "http://"))
			case "jobspec":
				b, err := os.ReadFile(rawExecTemplate(t))
				if err != nil {
					t.Fatal(err)
				}
				file = filepath.Join(t.TempDir(), "raw_exec.nomad.hcl")
				if err := os.WriteFile(file, b, 0o644); err != nil {
					t.Fatal(err)
				}
				a = nomadtest.Start(t, nomadtest.Options{PluginDir: nomadtest.BuildPlugin(t), Persistent: true,
					PluginConfig: poolBlock("dev", file, 1, 4)})
			case "token_file":
				a, file = aclAgent(t, true)
				writeToken(t, file, pluginToken(t, a, "agentkernel-pool", aclPolicy(t)))
				readLogs = func(allocID string) string { return aclLogs(t, a, allocID, "agent") }
			}
			waitWarm(t, a, "dev", 1)

			marker := filepath.Join(t.TempDir(), "m")
			alloc := runJob(t, a, jobHCL(t, "long.nomad.hcl", "echo after;", "echo after; touch "+marker+".done;", "MARKER", marker))
			waitTask(t, a, alloc.ID, "agent", "running", 60*time.Second)
			waitFor(t, 30*time.Second, "first output", func() bool { return strings.Contains(readLogs(alloc.ID), "before") })

			away := file + ".away"
			unusable, fix := []string{broken, "no such file"}, func() error { return os.Rename(away, file) }
			if broken == "address" {
				fwd.close()
				unusable = []string{"nomad api at " + fwd.url(), "connection refused"}
				fix = func() error { fwd.open(t, strings.TrimPrefix(a.Addr, "http://")); return nil }
			} else if err := os.Rename(file, away); err != nil {
				t.Fatal(err)
			}
			a.Restart()
			unhealthyWith(t, a, 60*time.Second, unusable...)
			if err := os.WriteFile(marker+".release", nil, 0o644); err != nil { // the command ends while the driver is unhealthy
				t.Fatal(err)
			}
			waitFor(t, 30*time.Second, "the command to finish", func() bool {
				_, err := os.Stat(marker + ".done")
				return err == nil
			})
			// Without its config the driver cannot report the exit yet; without
			// the API it need not wait (the exit is on the host).
			if ts := taskState(t, a, alloc.ID, "agent"); broken != "address" && ts.State != "running" {
				t.Fatalf("task %s while the driver was unhealthy, want running; events:\n%s", ts.State, events(ts))
			}

			if err := fix(); err != nil {
				t.Fatal(err)
			}
			if d, ok := a.WaitDriver(driver.Name, 60*time.Second, func(d *api.DriverInfo) bool { return d.Healthy }); !ok {
				t.Fatalf("driver not healthy after the file came back: %+v", d)
			}
			ts := waitTask(t, a, alloc.ID, "agent", "dead", 60*time.Second)
			if code, ok := exitCode(ts); !ok || code != 5 {
				t.Errorf("exit code %d (found %v), want 5; events:\n%s", code, ok, events(ts))
			}
			if out := readLogs(alloc.ID); strings.Count(out, "before") != 1 || strings.Count(out, "after") != 1 {
				t.Errorf("output %q: want 'before' and 'after' once each", out)
			}
			if runs, _ := os.ReadFile(marker + ".runs"); strings.Count(string(runs), "run") != 1 {
				t.Errorf("the command ran %d times, want once", strings.Count(string(runs), "run"))
			}
		})
	}
}
