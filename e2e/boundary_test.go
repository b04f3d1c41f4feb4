package e2e

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-pool/driver"
	"github.com/agentkernel/agentkernel-pool/driver/shipper"
	"github.com/agentkernel/agentkernel-pool/internal/nomadtest"
)

const hostSecret = "HOST-ONLY-SECRET-e2e-91c4"

// TestSandboxCannotMakeThePluginReadHostFiles: commands in isolated (exec)
// sandboxes replace their run's files and dirs with symlinks to a root-only
// host file and a host dir, a FIFO, and /dev/zero, while they run and across a
// restart of the plugin and the output shipper. Nothing of the host file
// reaches a log or an event, nothing on the host changes, every task ends with
// an event naming the sandbox and the file it tampered with, and the driver
// stays healthy.
func TestSandboxCannotMakeThePluginReadHostFiles(t *testing.T) {
	a := execPoolAgent(t, "iso", 5, 10) // a sandbox per case: exec sandboxes start slowly
	hostDir, hostFile, before := hostSecretFile(t)

	// Each command prints a line, waits until the test saw it shipped (so the
	// shipper has its output open), then tampers.
	cases := []struct {
		name, script string
		killShipper  bool // after tampering: kill the plugin and the shipper, so both re-open
	}{
		{"exit-symlink-host-file", `ln -s ` + hostFile + ` $d/exit.new && mv -f $d/exit.new $d/exit; exec sleep 300`, false},
		{"exit-fifo", `mkfifo $d/exit.new && mv -f $d/exit.new $d/exit; exec sleep 300`, false},
		{"rundir-symlink-host-dir", `mv $d $d.old && ln -s ` + hostDir + ` $d; exec sleep 300`, false},
		{"agentkernel-symlink-dev-zero", `mv /alloc/.agentkernel /alloc/.old && ln -s /dev/zero /alloc/.agentkernel; exec sleep 300`, false},
		{"stdout-swapped-then-restart", `ln -s ` + hostFile + ` $d/o.new && mv -f $d/o.new $d/stdout; ln -s ` + hostFile + ` $d/e.new && mv -f $d/e.new $d/stderr; echo after-swap; exec sleep 300`, true},
	}
	allocs := map[string]string{}
	for _, c := range cases {
		script := `for d in /alloc/.agentkernel/*/; do :; done; d=$(cd $d && pwd); echo before; while [ ! -e /alloc/go ]; do sleep 0.1; done; ` + c.script
		allocs[c.name] = runJob(t, a, commandJob(t, "tamper-"+c.name, "iso", script)).ID
	}
	for _, c := range cases {
		id := allocs[c.name]
		waitTask(t, a, id, "agent", "running", 180*time.Second)
		waitFor(t, 60*time.Second, "the first line of "+c.name, func() bool {
			return strings.Contains(logs(t, a, id, "agent"), "before")
		})
		releaseSandbox(t, a, id, "go")
		if !c.killShipper {
			continue
		}
		waitFor(t, 60*time.Second, "the swap in "+c.name, func() bool {
			return strings.Contains(logs(t, a, id, "agent"), "after-swap")
		})
		pids := append(pluginPIDs(t, a), shipperPIDs(id)...)
		if len(pids) < 2 {
			t.Fatalf("plugin and shipper of %s: found pids %v", c.name, pids)
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	for _, c := range cases {
		id := allocs[c.name]
		ts := waitTask(t, a, id, "agent", "dead", 120*time.Second)
		ev := events(ts)
		if !strings.Contains(ev, "tampered with") {
			t.Errorf("%s: no event names the tampering:\n%s", c.name, ev)
		}
		if code, _ := exitCode(ts); code == 0 {
			t.Errorf("%s: exit code 0, want a failure", c.name)
		}
		out := logs(t, a, id, "agent")
		stderr, _, _ := nomadCLI(t, a, "", "alloc", "logs", "-stderr", id, "agent")
		for what, s := range map[string]string{"stdout": out, "stderr": stderr, "events": ev} {
			if strings.Contains(s, hostSecret) {
				t.Fatalf("%s: the host file's content is in the task's %s", c.name, what)
			}
		}
		if !strings.Contains(out, "before") {
			t.Errorf("%s: stdout %q lacks what the command printed before tampering", c.name, out)
		}
		if strings.Contains(a.Log(), hostSecret) {
			t.Fatalf("%s: the host file's content is in the agent log", c.name)
		}
	}
	if after := treeState(t, hostDir); after != before {
		t.Fatalf("the host dir changed:\n%s\nwas\n%s", after, before)
	}
	if d, ok := a.WaitDriver(driver.Name, 30*time.Second, func(d *api.DriverInfo) bool { return d.Healthy }); !ok {
		t.Errorf("driver unhealthy after the tampering: %+v", d)
	}
}

// hclString quotes s as an HCL string literal. Nomad evaluates ${...} in
// driver config again on the client, so s must not hold any.
func hclString(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "${", "$${", "%{", "%%{").Replace(s) + `"`
}

// shipperPIDs finds the output shippers of an allocation's tasks: the plugin
// binary running its hidden ship command for a task dir of that allocation.
func shipperPIDs(allocID string) []int { return helperPIDs(shipper.ShipCommand, allocID) }

// holderPIDs finds the log holders of an allocation's tasks (hidden command
// __hold).
func holderPIDs(allocID string) []int { return helperPIDs(shipper.HoldCommand, allocID) }

// helperPIDs finds the plugin binary's processes running a hidden command for
// a task dir of the allocation.
func helperPIDs(command, allocID string) []int {
	var pids []int
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		b, err := os.ReadFile(d + "/cmdline")
		if err != nil || !bytes.Contains(b, []byte("\x00"+command+"\x00")) || !bytes.Contains(b, []byte("/"+allocID+"/")) {
			continue
		}
		if pid, err := strconv.Atoi(filepath.Base(d)); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// execPoolAgent starts an agent with a warm pool of the isolated exec
// template and waits until size sandboxes are warm; it skips without nomad or
// root.
func execPoolAgent(t *testing.T, pool string, size, max int) *nomadtest.Agent {
	t.Helper()
	if _, err := nomadtest.Binary(); err != nil {
		t.Skipf("skipping e2e: %v", err)
	}
	if os.Geteuid() != 0 {
		t.Skip("skipping: the exec driver needs root")
	}
	spec, err := filepath.Abs("../example/pools/exec.nomad.hcl")
	if err != nil {
		t.Fatal(err)
	}
	a := nomadtest.Start(t, nomadtest.Options{PluginDir: nomadtest.BuildPlugin(t), PluginConfig: poolBlock(pool, spec, size, max)})
	// Nomad builds a chroot for each exec sandbox: seconds on an idle host,
	// past a minute and a half on a busy one.
	waitWarmWithin(t, a, pool, size, 5*time.Minute)
	return a
}

// hostSecretFile makes a root-only file holding hostSecret in a dir of its
// own, standing in for the host's secrets, and returns the dir, the file and
// the dir's state (treeState) to compare with afterwards.
func hostSecretFile(t *testing.T) (dir, file, state string) {
	t.Helper()
	dir = t.TempDir()
	file = filepath.Join(dir, "token")
	if err := os.WriteFile(file, []byte(hostSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir, file, treeState(t, dir)
}

// treeState is every entry under dir with its mode, owner, size, mtime and
// content, to tell whether anything changed.
func treeState(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		c, _ := os.ReadFile(p)
		b.WriteString(p + " " + strconv.FormatUint(uint64(st.Mode), 8) + " " + strconv.Itoa(int(st.Uid)) + " " +
			strconv.FormatInt(st.Size, 10) + " " + strconv.FormatInt(st.Mtim.Nano(), 10) + " " + string(c) + "\n")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}
