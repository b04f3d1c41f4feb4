package e2e

import (
	"strings"
	"testing"
	"time"
)

// serviceGroup is the group's network and Nomad service with an http check
// that TestServiceCheckGatesHandOut adds to a template.
const serviceGroup = `network {
      port "http" {}
    }
    service {
      provider = "nomad"
      name     = "ready-web"
      port     = "http"
      check {
        type     = "http"
        path     = "/"
        interval = "1s"
        timeout  = "1s"
      }
    }
`

// TestServiceCheckGatesHandOut: a template with a Nomad service and an http
// check on a server it starts after 3 s, on exec and on docker with runc and
// with gVisor. Tasks submitted while the sandboxes prepare get only
// sandboxes whose server answers.
//
// Nomad's client checks the service from the host, so the docker sandboxes
// share the host's network (network_mode "host"; this dockerd has no
// bridge). gVisor then needs its host network passthrough, the runtime
// runsc-host (dockerHostGVisor): the default runsc here is --network=none.
// The tasks fetch with nc, not wget: busybox's wget fails in gVisor on a
// host network ("error getting response: Resource temporarily unavailable").
func TestServiceCheckGatesHandOut(t *testing.T) {
	for _, runtime := range []string{"exec", "runc", dockerHostGVisor} {
		t.Run(runtime, func(t *testing.T) {
			// Where the server's files go: the task dir under exec, the
			// tmpfs /tmp under docker (its root is read-only).
			dir, portFile := `"$NOMAD_TASK_DIR/.."`, "port"
			if runtime != "exec" {
				dir, portFile = "/tmp", "/tmp/port"
			}
			template := sandboxTemplate(t, runtime, "cd "+dir+"; echo $NOMAD_PORT_http > port; mkdir -p www; echo served > www/index.html; sleep 3; "+
				"exec busybox httpd -f -p 127.0.0.1:$NOMAD_PORT_http -h www", "")
			const group, none = "\n  group \"sandbox\" {\n", `network_mode = "none"`
			if !strings.Contains(template, group) || (runtime != "exec" && !strings.Contains(template, none)) {
				t.Fatalf("the %s template changed shape:\n%s", runtime, template)
			}
			template = strings.Replace(template, group, group+"    "+serviceGroup, 1)
			template = strings.Replace(template, none, `network_mode = "host"`, 1)
			a := readyAgent(t, template, "    size = 2\n    max = 4\n    claim_timeout = \"5m\"\n    ready_timeout = \"3m\"", runtime)
			const n = 4
			// A refused connection (nothing listens) fails at once: that
			// is an unready sandbox. Any other failed fetch is printed and
			// tried again, twice: connects from gVisor on the host network
			// fail now and then ("Resource temporarily unavailable").
			runJob(t, a, batchJob("web-tasks", "ready", n,
				`uname -r; for try in 1 2 3; do `+
					`out=$(printf 'GET / HTTP/1.0\r\n\r\n' | busybox nc -w 5 127.0.0.1 "$(cat `+portFile+`)" 2>&1); `+
					`case $out in *served*) echo served; exit 0 ;; esac; echo "fetch $try: $out"; `+
					`case $out in *[Rr]efused*) break ;; esac; sleep 0.2; done; echo NOT-SERVING; exit 7`))
			allocs := finishedAllocs(t, a, "web-tasks", n, 6*time.Minute)
			for _, al := range allocs {
				ts := al.TaskStates["agent"]
				code, ok := exitCode(ts)
				out := logs(t, a, al.ID, "agent")
				if !ok || code != 0 || !strings.Contains(out, "served") {
					t.Errorf("task %s: exit %d (%v), output %q; events:\n%s", al.ID[:8], code, ok, out, events(ts))
				}
				if gvisor := strings.Contains(out, "4.4.0"); gvisor != (runtime == dockerHostGVisor) {
					t.Errorf("task %s: output %q: uname -r says gVisor=%v, want %v", al.ID[:8], out, gvisor, runtime == dockerHostGVisor)
				}
			}
		})
	}
}
