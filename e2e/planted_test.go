package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agentkernel/agentkernel-pool/internal/nomadtest"
	"github.com/agentkernel/agentkernel-pool/internal/opentest"
)

// TestPlantedNodesAreNeverOpenedOnTheHost: commands in isolated (exec)
// sandboxes replace their run's exit file with a character device (/dev/null's
// numbers: harmless if opened, but a watchdog's would reboot the node) and
// with a FIFO. The root plugin and its shipper never open either on the host
// (inotify sees no open of the node), and each task ends with an event naming
// the tampering.
func TestPlantedNodesAreNeverOpenedOnTheHost(t *testing.T) {
	a := execPoolAgent(t, "iso", 2, 4)
	// Each command prints a line and waits until the test saw it shipped (the
	// shipper follows the run), ends its supervisor (the one process in the
	// sandbox that would open exit, to record the command's status), makes
	// the node as exit.new and waits again while the test watches the node,
	// then puts it in place of exit. Any open the watch sees is the host's.
	cases := map[string]string{
		"char-device": `mknod $d/exit.new c 1 3 || { echo no-mknod; exit 0; }`,
		"fifo":        `mkfifo $d/exit.new`,
	}
	allocs := map[string]string{}
	for name, plant := range cases {
		script := `for d in /alloc/.agentkernel/*/; do :; done; d=$(cd $d && pwd); echo before; while [ ! -e /alloc/go ]; do sleep 0.1; done; ` +
			`read -r _ s <$d/pid && kill -9 $s; ` + plant + `; touch /alloc/planted; while [ ! -e /alloc/go2 ]; do sleep 0.1; done; mv -f $d/exit.new $d/exit; exec sleep 300`
		allocs[name] = runJob(t, a, commandJob(t, "plant-"+name, "iso", script)).ID
	}
	watches := map[string]*opentest.Watch{}
	for name, id := range allocs {
		waitTask(t, a, id, "agent", "running", 180*time.Second)
		waitFor(t, 60*time.Second, "the first line of "+name, func() bool {
			return strings.Contains(logs(t, a, id, "agent"), "before")
		})
		releaseSandbox(t, a, id, "go")
		run := runDirOf(t, a, id)
		waitFor(t, 60*time.Second, "the node of "+name, func() bool {
			_, err := os.Stat(filepath.Join(filepath.Dir(filepath.Dir(run)), "planted"))
			return err == nil || strings.Contains(logs(t, a, id, "agent"), "no-mknod")
		})
		if strings.Contains(logs(t, a, id, "agent"), "no-mknod") {
			t.Logf("%s: the sandbox may not make device nodes here; case left out", name)
			continue
		}
		watches[name] = opentest.NewWatch(t, filepath.Join(run, "exit.new"))
		releaseSandbox(t, a, id, "go2")
	}
	for name, w := range watches {
		ts := waitTask(t, a, allocs[name], "agent", "dead", 120*time.Second)
		if w.Opened() {
			t.Errorf("%s: the node the sandbox planted was opened on the host", name)
		}
		if ev := events(ts); !strings.Contains(ev, "tampered with") {
			t.Errorf("%s: no event names the tampering:\n%s", name, ev)
		}
		if code, _ := exitCode(ts); code == 0 {
			t.Errorf("%s: exit code 0, want a failure", name)
		}
	}
}

// runDirOf is the host path of the one run dir of an allocation's task.
func runDirOf(t *testing.T, a *nomadtest.Agent, allocID string) string {
	t.Helper()
	runs, _ := filepath.Glob(filepath.Join(a.DataDir, "alloc", "*", "alloc", ".agentkernel", allocID[:8]+"-*"))
	if len(runs) != 1 {
		t.Fatalf("run dirs of %s: %v, want one", allocID, runs)
	}
	return runs[0]
}
