package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-pool/driver"
	"github.com/agentkernel/agentkernel-pool/internal/nomadtest"
)

// readyAgent starts an agent with one pool "ready" of the template text
// (written to a file) and the pool options opts, without waiting for it to
// turn warm. runtime is the template's: raw_exec, exec (needs root; its
// sandboxes get slimChroot, a shell, coreutils and busybox), or docker's
// runc, runsc or runsc-host (needs dockerd with that runtime; the test image
// is loaded).
func readyAgent(t *testing.T, template, opts, runtime string) *nomadtest.Agent {
	t.Helper()
	var client string
	if runtime == "exec" {
		client = "client {\n" + slimChroot + "}\n"
	}
	return readyAgentWith(t, template, opts, runtime, client)
}

// readyAgentWith is readyAgent with the agent config client appended (""
// for Nomad's default chroot_env under exec).
func readyAgentWith(t *testing.T, template, opts, runtime, client string) *nomadtest.Agent {
	t.Helper()
	if _, err := nomadtest.Binary(); err != nil {
		t.Skipf("skipping e2e: %v", err)
	}
	extra := client
	switch runtime {
	case "exec":
		if os.Geteuid() != 0 {
			t.Skip("skipping: the exec driver needs root")
		}
	case "runc", "runsc", dockerHostGVisor:
		if why := dockerReady(); why != "" {
			t.Skipf("skipping docker e2e: %s", why)
		}
		if why := dockerLacks(runtime); why != "" {
			t.Skipf("skipping: %s", why)
		}
		ensureImage(t)
		extra += dockerPluginConfig
	}
	spec := filepath.Join(t.TempDir(), "ready.nomad.hcl")
	if err := os.WriteFile(spec, []byte(template), 0o644); err != nil {
		t.Fatal(err)
	}
	block := "config {\n  pool \"ready\" {\n    jobspec = \"" + spec + "\"\n" + opts + "\n  }\n}"
	return nomadtest.Start(t, nomadtest.Options{PluginDir: nomadtest.BuildPlugin(t), PluginConfig: block, ExtraConfig: extra})
}

// readyAttr reads one of the pool's node attributes ("" when not there).
func readyAttr(a *nomadtest.Agent, pool, what string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n, err := a.Node(ctx)
	if err != nil {
		return ""
	}
	return n.Attributes["driver."+driver.Name+".pool."+pool+"."+what]
}

// watchPreparing records the highest preparing count the node publishes
// until the test ends.
func watchPreparing(t *testing.T, a *nomadtest.Agent, pool string) *atomic.Int64 {
	var most atomic.Int64
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			if n, err := strconv.Atoi(readyAttr(a, pool, "preparing")); err == nil && int64(n) > most.Load() {
				most.Store(int64(n))
			}
			select {
			case <-done:
				return
			case <-time.After(250 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { close(done); <-stopped })
	return &most
}

// batchJob is a batch job of count sandbox tasks on pool, each running
// script, with no restarts.
func batchJob(name, pool string, count int, script string) string {
	return fmt.Sprintf(`job %q {
  type = "batch"
  group "agent" {
    count = %d
    restart {
      attempts = 0
      mode     = "fail"
    }
    reschedule {
      attempts  = 0
      unlimited = false
    }
    task "agent" {
      driver = "agentkernel-pool"
      config {
        pool    = %q
        command = "/bin/sh"
        args    = ["-c", %s]
      }
      resources {
        cpu    = 20
        memory = 16
      }
    }
  }
}
`, name, count, pool, hclString(script))
}

// finishedAllocs waits for the job's count allocations to be dead and
// returns them.
func finishedAllocs(t *testing.T, a *nomadtest.Agent, job string, count int, within time.Duration) []*api.Allocation {
	t.Helper()
	var out []*api.Allocation
	waitFor(t, within, fmt.Sprintf("%d allocations of %s done", count, job), func() bool {
		stubs, _, err := a.Client.Jobs().Allocations(job, false, nil)
		if err != nil || len(stubs) < count {
			return false
		}
		out = out[:0]
		for _, s := range stubs {
			if s.ClientStatus != api.AllocClientStatusComplete && s.ClientStatus != api.AllocClientStatusFailed {
				return false
			}
			al, _, err := a.Client.Allocations().Info(s.ID, nil)
			if err != nil {
				return false
			}
			out = append(out, al)
		}
		return true
	})
	return out
}

// TestReadyCommandGatesHandOut: a template that prepares for 3 s and then
// writes a marker, with a ready command for the marker, on exec and on
// docker with runc and gVisor. 20 sandbox tasks submitted while the
// sandboxes are still preparing all find the marker: none is handed an
// unprepared sandbox. The node showed sandboxes preparing meanwhile.
func TestReadyCommandGatesHandOut(t *testing.T) {
	const execTemplate = `job "ready-marker" {
  group "sandbox" {
    task "sandbox" {
      driver = "exec"
      config {
        command = "/bin/sh"
        args    = ["-c", "sleep 3; echo done > \"$NOMAD_TASK_DIR/../prepared\"; exec sleep infinity"]
      }
      meta {
        agentkernel_pool_ready          = "test -f prepared"
        agentkernel_pool_ready_interval = "200ms"
      }
      resources {
        cpu    = 50
        memory = 32
      }
    }
  }
}
`
	for _, runtime := range []string{"exec", "runc", "runsc"} {
		t.Run(runtime, func(t *testing.T) {
			// The marker, where the ready command and the tasks look (in
			// their working dir: the task dir under exec, / under docker).
			template, marker := execTemplate, "prepared"
			if runtime != "exec" {
				template, marker = readyDockerTemplate(t, runtime), "/tmp/prepared"
			}
			// An exec sandbox in Nomad's default chroot_env took 1.5
			// minutes to start with 8 at once on a saturated 2-core
			// machine: two rounds of 12 fit in claim_timeout even there.
			a := readyAgent(t, template, "    size = 4\n    max = 12\n    claim_timeout = \"10m\"\n    ready_timeout = \"5m\"", runtime)
			preparing := watchPreparing(t, a, "ready")
			if w := readyAttr(a, "ready", "warm"); w != "" && w != "0" {
				t.Fatalf("%s sandboxes warm before the tasks were submitted; want them still preparing", w)
			}
			const n = 20
			runJob(t, a, batchJob("ready-tasks", "ready", n,
				`if test -f `+marker+`; then echo PREPARED; else echo UNPREPARED; ls -la; exit 7; fi`))
			allocs := finishedAllocs(t, a, "ready-tasks", n, 12*time.Minute)
			unprepared := 0
			for _, al := range allocs {
				ts := al.TaskStates["agent"]
				code, ok := exitCode(ts)
				out := logs(t, a, al.ID, "agent")
				if !ok || code != 0 || !strings.Contains(out, "PREPARED") {
					unprepared++
					t.Errorf("task %s: exit %d (%v), output %q; events:\n%s", al.ID[:8], code, ok, out, events(ts))
				}
			}
			t.Logf("%d of %d tasks saw an unprepared sandbox; most sandboxes preparing at once: %d", unprepared, n, preparing.Load())
			if preparing.Load() == 0 {
				t.Errorf("the node never showed a sandbox preparing")
			}
		})
	}
}

// readyDockerTemplate is the docker example template on runtime with the
// test image, preparing for 3 s before it writes its marker in its /tmp (a
// tmpfs: the root is read-only), with the ready command for the marker.
func readyDockerTemplate(t *testing.T, runtime string) string {
	return sandboxTemplate(t, runtime, "sleep 3; echo done > /tmp/prepared; while :; do sleep 3600; done", `meta {
        agentkernel_pool_ready          = "test -f /tmp/prepared"
        agentkernel_pool_ready_interval = "200ms"
      }`)
}

// sandboxTemplate is the example template of runtime (raw_exec, exec, or
// docker-gvisor.nomad.hcl on a docker runtime, with the test image) whose
// sandbox runs script under /bin/sh instead of idling, with task (HCL) added
// to its task block.
func sandboxTemplate(t *testing.T, runtime, script, task string) string {
	t.Helper()
	path, idle := dockerTemplate(t, runtime, ""), `command         = "/bin/sh"
        args            = ["-c", "while :; do sleep 3600; done"]`
	if runtime == "raw_exec" || runtime == "exec" {
		path, idle = "../example/pools/"+runtime+".nomad.hcl", `command = "/bin/sleep"
        args    = ["infinity"]`
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s, at := string(b), "\n    task \"sandbox\" {\n"
	if !strings.Contains(s, idle) || !strings.Contains(s, at) {
		t.Fatalf("%s changed shape: no %s", path, idle)
	}
	s = strings.Replace(s, idle, `command = "/bin/sh"
        args    = ["-c", `+hclString(script)+`]`, 1)
	if task != "" {
		s = strings.Replace(s, at, at+"      "+task+"\n", 1)
	}
	return s
}

// TestReadyNeverPasses: a ready command that never passes, on raw_exec and
// on docker with gVisor. The pool says so, with the command's output, within
// ready_timeout + 1 minute (node attribute, status); a task fails at
// claim_timeout naming it; the sandboxes replaced are purged: no more than
// max live at any time, and none left of those replaced.
func TestReadyNeverPasses(t *testing.T) {
	const why = "model server unreachable on 127.0.0.1:8000"
	for _, runtime := range []string{"raw_exec", "runsc"} {
		t.Run(runtime, func(t *testing.T) {
			path, driverLine := rawExecTemplate(t), `driver = "raw_exec"`
			if runtime == "runsc" {
				path, driverLine = dockerTemplate(t, runtime, ""), `driver = "docker"`
			}
			template, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			tmpl := strings.Replace(string(template), driverLine, driverLine+`
      meta {
        agentkernel_pool_ready = "echo '`+why+`' >&2; exit 1"
      }`, 1)
			a := readyAgent(t, tmpl, "    size = 1\n    max = 2\n    claim_timeout = \"15s\"\n    ready_timeout = \"20s\"", runtime)
			began := time.Now()
			alloc := runJob(t, a, batchJob("never-ready", "ready", 1, "echo ran; exit 0"))
			ts := waitTask(t, a, alloc.ID, "agent", "dead", 2*time.Minute)
			if code, ok := exitCode(ts); ok && code == 0 {
				t.Errorf("the task ran (exit 0) in a sandbox that never got ready")
			}
			if ev := events(ts); !strings.Contains(ev, why) {
				t.Errorf("task events do not name the ready command's output:\n%s", ev)
			}
			var attr string
			waitFor(t, 20*time.Second+time.Minute, "the pool's error naming the ready command's output", func() bool {
				attr = readyAttr(a, "ready", "error")
				return strings.Contains(attr, why)
			})
			t.Logf("error attribute after %s: %s", time.Since(began).Round(time.Second), attr)
			if !strings.Contains(attr, "not ready within ready_timeout 20s") {
				t.Errorf("error attribute %q does not say the sandbox was not ready in time", attr)
			}
			if out := pluginStatus(t, a); !strings.Contains(out, why) {
				t.Errorf("status does not show why:\n%s", out)
			}
			// Nothing leaks: the sandboxes live now are replaced and purged within
			// another ready_timeout and backoff, and the pool never holds more than
			// max meanwhile.
			first := map[string]bool{}
			for _, j := range warmJobs(t, a) {
				first[j.ID] = true
			}
			left := len(first)
			waitFor(t, 90*time.Second, "the sandboxes live when the error showed purged", func() bool {
				live := warmJobs(t, a)
				if len(live) > 2 {
					t.Fatalf("%d live sandbox jobs; max is 2", len(live))
				}
				left = 0
				for _, j := range live {
					if first[j.ID] {
						left++
					}
				}
				return left == 0
			})
			if n, _ := strconv.Atoi(readyAttr(a, "ready", "warm")); n != 0 {
				t.Errorf("%d warm; want none", n)
			}
		})
	}
}
