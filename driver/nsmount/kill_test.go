package nsmount

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Processes for the KillAll tests: this test binary run again in a role. A
// tree starts a writer, which holds its cwd in a host dir and creates a file
// there every 10 ms. A split tree is the init of a pid namespace of its own
// that stayed in the test's mount namespace; its writer is in a mount
// namespace of its own (the sandbox's, as the host finds it), and beside it
// runs a process in another mount namespace and another session: the shape
// of a command that moved out of its sandbox's mount namespace. Every
// process of a tree carries its token in its environment, so the test
// counts them on the host.
const (
	killRoleEnv  = "NSMOUNT_TEST_KILL_ROLE"
	killTokenEnv = "NSMOUNT_TEST_KILL_TOKEN"
)

func killChild(role string) int {
	switch role {
	case "tree":
		dir, split := os.Args[len(os.Args)-2], os.Args[len(os.Args)-1] == "split"
		var attr *unix.SysProcAttr
		if split {
			attr = &unix.SysProcAttr{Cloneflags: unix.CLONE_NEWNS}
		}
		if err := spawn("writer", dir, attr).Start(); err != nil {
			fmt.Println("start writer:", err)
			return 1
		}
		if split {
			c := spawn("sleep", "-", &unix.SysProcAttr{Cloneflags: unix.CLONE_NEWNS, Setsid: true})
			if err := c.Start(); err != nil {
				fmt.Println("start escapee:", err)
				return 1
			}
		}
		fmt.Println("ready")
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	case "writer":
		if err := os.Chdir(os.Args[len(os.Args)-2]); err != nil {
			return 1
		}
		for i := 0; ; i++ {
			_ = os.WriteFile("f"+strconv.Itoa(i), nil, 0o644)
			time.Sleep(10 * time.Millisecond)
		}
	case "sleep":
		time.Sleep(time.Hour)
	}
	return 0
}

// spawn is this binary in a role, with the caller's token.
func spawn(role, arg string, attr *unix.SysProcAttr) *exec.Cmd {
	c := exec.Command(os.Args[0], "-test.run=^$", arg, "-")
	c.Env = []string{killRoleEnv + "=" + role, killTokenEnv + "=" + os.Getenv(killTokenEnv)}
	c.SysProcAttr = attr
	return c
}

// startTree starts a tree with flags (its namespaces) and returns its pid.
func startTree(t *testing.T, token, dir string, flags uintptr, split bool) int {
	t.Helper()
	arg := "-"
	if split {
		arg = "split"
	}
	c := exec.Command(os.Args[0], "-test.run=^$", dir, arg)
	c.Env = []string{killRoleEnv + "=tree", killTokenEnv + "=" + token}
	c.SysProcAttr = &unix.SysProcAttr{Cloneflags: flags}
	stdin, err := c.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := c.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		_ = c.Wait()
		for _, pid := range withToken(token) { // whatever a failed test left
			_ = unix.Kill(pid, unix.SIGKILL)
		}
	})
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("tree did not start: %q %v", line, err)
	}
	return c.Process.Pid
}

// withToken lists the live processes whose environment carries token.
func withToken(token string) []int {
	var pids []int
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		env, err := os.ReadFile(d + "/environ")
		if err == nil && bytes.Contains(env, []byte(killTokenEnv+"="+token+"\x00")) {
			if pid, err := strconv.Atoi(filepath.Base(d)); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

func files(t *testing.T, dir string) int {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return len(es)
}

// openNS opens the mount namespace of pid as Open would, without the check
// of the sandbox's alloc dir (these trees have none).
func openNS(t *testing.T, pid int) *Namespace {
	t.Helper()
	self, err := nsInode("self")
	if err != nil {
		t.Fatal(err)
	}
	n, err := open(pid, map[uint64]bool{self: true})
	if err != nil || n == nil {
		t.Fatalf("open namespace of %d: %v", pid, err)
	}
	t.Cleanup(n.Close)
	return n
}

// inNamespace is the process of token whose mount namespace is not the
// test's.
func inNamespace(t *testing.T, token string) int {
	t.Helper()
	self, err := nsInode("self")
	if err != nil {
		t.Fatal(err)
	}
	for _, pid := range withToken(token) {
		if ino, err := nsInode(strconv.Itoa(pid)); err == nil && ino != self {
			return pid
		}
	}
	t.Fatalf("no process of %s in a mount namespace of its own", token)
	return 0
}

// KillAll ends every process of the sandbox, and only those: the writer that
// holds a cwd in a host dir stops writing there; a process of the test's
// own namespace and one of another sandbox live on. With a pid namespace of
// its own, processes out of the sandbox's mount namespace are ended too.
func TestKillAllEndsTheSandboxOnly(t *testing.T) {
	needRoot(t)
	for _, tc := range []struct {
		name  string
		flags uintptr
		split bool
	}{
		{"mount namespace", unix.CLONE_NEWNS, false},
		{"pid namespace, processes out of the mount namespace", unix.CLONE_NEWPID, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Tokens unique to this test process: two test binaries
			// running at once must not count each other's trees.
			run := fmt.Sprintf("%s-%d", tc.name, os.Getpid())
			// Bystanders: a process of the plugin's namespace, another sandbox.
			host := spawn("sleep", "-", nil)
			host.Env = append(host.Env, killTokenEnv+"=host-"+run)
			if err := host.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { _ = host.Process.Kill(); _ = host.Wait() }()
			otherDir := t.TempDir()
			startTree(t, "other-"+run, otherDir, unix.CLONE_NEWNS, false)

			dir := t.TempDir()
			token := "sandbox-" + run
			startTree(t, token, dir, tc.flags, tc.split)
			want := 2
			if tc.split {
				want = 3
			}
			deadline := time.Now().Add(10 * time.Second)
			for len(withToken(token)) < want || files(t, dir) == 0 {
				if time.Now().After(deadline) {
					t.Fatalf("sandbox processes %v, files %d: want %d processes and a file", withToken(token), files(t, dir), want)
				}
				time.Sleep(10 * time.Millisecond)
			}

			// The namespace as the host finds it: the writer's.
			killed, err := openNS(t, inNamespace(t, token)).KillAll()
			if err != nil {
				t.Fatalf("KillAll: %v", err)
			}
			if left := withToken(token); len(left) > 0 || killed < 1 {
				t.Fatalf("KillAll signalled %d; processes of the sandbox left: %v", killed, left)
			}
			before := files(t, dir)
			time.Sleep(200 * time.Millisecond)
			if after := files(t, dir); after != before {
				t.Errorf("the host dir went from %d to %d files after KillAll", before, after)
			}
			if len(withToken("other-"+run)) != 2 {
				t.Errorf("another sandbox's processes were hit: %v left", withToken("other-"+run))
			}
			if err := unix.Kill(host.Process.Pid, 0); err != nil {
				t.Errorf("a process of the test's own namespace was hit: %v", err)
			}
		})
	}
}
