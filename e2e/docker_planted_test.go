package e2e

import (
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDockerSandboxLeavesNothingPrivileged: on docker pools (gVisor's runsc
// and runc), a command running as root with docker's default capabilities
// (CAP_MKNOD, CAP_CHOWN, CAP_FOWNER among them) copies /bin/sh into local/
// and alloc/data, makes the copies setuid and setgid (one chowned to root),
// makes a setgid dir, and plants a character device, a block device and a
// FIFO in both: the task's dirs on the host hold plain files and dirs of
// an unprivileged owner, and no device node or FIFO at all.
func TestDockerSandboxLeavesNothingPrivileged(t *testing.T) {
	for _, runtime := range []string{"runsc", "runc"} {
		t.Run(runtime, func(t *testing.T) {
			a := dockerAgent(t, runtime, "", 2, 6, false)
			script := `id; cp /bin/sh local/evil && chmod 4755 local/evil; cp /bin/sh local/rootevil && chown 0:0 local/rootevil && chmod 6755 local/rootevil; ` +
				`mkdir local/sg && chmod 2777 local/sg && cp /bin/sh local/sg/evil && chmod 4755 local/sg/evil; ` +
				`cp /bin/sh /alloc/data/evil && chmod 6755 /alloc/data/evil; ` +
				`for d in local /alloc/data; do mknod $d/null c 1 3; mknod $d/loop b 7 0; mkfifo $d/fifo; done; ls -ln local /alloc/data; exit 3`
			alloc := runJob(t, a, commandJob(t, "e2e-docker-planted", "box", script))
			ts := waitTask(t, a, alloc.ID, "agent", "dead", 120*time.Second)
			if code, _ := exitCode(ts); code != 3 {
				t.Errorf("exit code %d; events:\n%s", code, events(ts))
			}
			out := logs(t, a, alloc.ID, "agent")
			t.Logf("the planting command's stdout:\n%s", out)
			if !strings.Contains(out, "evil") {
				t.Fatalf("the command did not get to plant anything: %q", out)
			}
			plantedUnprivileged(t, a, alloc.ID)
			task := filepath.Join(a.DataDir, "alloc", alloc.ID)
			for _, dir := range []string{"agent/local", "alloc/data"} {
				_ = filepath.WalkDir(filepath.Join(task, dir), func(p string, d fs.DirEntry, err error) error {
					if err == nil && d.Type()&(fs.ModeDevice|fs.ModeCharDevice|fs.ModeNamedPipe|fs.ModeSocket) != 0 {
						t.Errorf("%s on the host is %v: a node the sandbox planted", p, d.Type())
					}
					return nil
				})
			}
		})
	}
}
