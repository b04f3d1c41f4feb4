package nsmount

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// A sandbox for the tests: this test binary run again in a mount namespace of
// its own, chrooted into a dir whose alloc/ plays the sandbox's shared alloc
// dir, with the sandbox's NOMAD_ALLOC_ID in its environment.
const childEnv = "NSMOUNT_TEST_CHROOT"

// userEnv says who the sandbox process becomes once chrooted: root (empty),
// "nobody", or "nobody-nnp" (nobody with no_new_privs set).
const userEnv = "NSMOUNT_TEST_USER"

func init() {
	if os.Getenv(childEnv) != "" {
		// no_new_privs is a thread's: keep main on the thread whose
		// status /proc/<pid>/status shows.
		runtime.LockOSThread()
	}
}

func TestMain(m *testing.M) {
	if dir := os.Getenv(childEnv); dir != "" {
		os.Exit(sandboxMain(dir))
	}
	if role := os.Getenv(killRoleEnv); role != "" {
		os.Exit(killChild(role))
	}
	os.Exit(m.Run())
}

func sandboxMain(dir string) int {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		fmt.Println("mount private:", err)
		return 1
	}
	if err := unix.Chroot(dir); err != nil {
		fmt.Println("chroot:", err)
		return 1
	}
	if u := os.Getenv(userEnv); u != "" {
		if u == "nobody-nnp" {
			if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
				fmt.Println("no_new_privs:", err)
				return 1
			}
		}
		// Dropping root's uids drops its capabilities with them.
		if err := errors.Join(syscall.Setgroups(nil), syscall.Setgid(65534), syscall.Setuid(65534)); err != nil {
			fmt.Println("become nobody:", err)
			return 1
		}
	}
	fmt.Println("ready")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n') // until the test ends
	return 0
}

type sandbox struct {
	root  string // its root, on the host
	alloc string // its shared alloc dir, on the host
	pid   int
}

// startSandbox runs a sandbox process whose env names allocID, as user
// (userEnv); newNS false leaves it in the test's own mount namespace
// (raw_exec).
func startSandbox(t *testing.T, allocID string, newNS bool, user string) *sandbox {
	t.Helper()
	root := t.TempDir()
	alloc := filepath.Join(root, "alloc")
	if err := os.MkdirAll(filepath.Join(alloc, "data"), 0o777); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = []string{childEnv + "=" + root, "NOMAD_ALLOC_ID=" + allocID, userEnv + "=" + user}
	if newNS {
		cmd.SysProcAttr = &unix.SysProcAttr{Cloneflags: unix.CLONE_NEWNS}
	} else {
		cmd.Env[0] = childEnv + "=/" // chroot to /: same root, same namespace
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("sandbox process did not start: %q %v", line, err)
	}
	return &sandbox{root: root, alloc: alloc, pid: cmd.Process.Pid}
}

// inSandbox is a path as the sandbox's processes see it.
func (s *sandbox) inSandbox(rel string) string {
	return filepath.Join(fmt.Sprintf("/proc/%d/root", s.pid), rel)
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("nsmount needs root (mount namespaces, open_tree, move_mount); run the tests as root")
	}
	if _, err := unix.OpenTree(unix.AT_FDCWD, "/", unix.OPEN_TREE_CLOEXEC); errors.Is(err, unix.ENOSYS) {
		t.Skip("this kernel has no open_tree(2) (Linux 5.2+)")
	}
}

func openDir(t *testing.T, p string) *os.File {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestMountShowsTheHostDirInTheSandboxOnly(t *testing.T) {
	needRoot(t)
	selfNS, err := nsInode("self")
	if err != nil {
		t.Fatal(err)
	}
	sb := startSandbox(t, "alloc-1", true, "nobody-nnp")
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "repo.txt"), []byte("cloned"), 0o644); err != nil {
		t.Fatal(err)
	}

	ns, err := Find("alloc-1", openDir(t, sb.alloc), "alloc")
	if err != nil {
		t.Fatalf("Find: %v", err)
	}
	defer ns.Close()
	srcDir := openDir(t, src)
	if err := ns.Mount(srcDir, "alloc/data"); err != nil {
		t.Fatalf("Mount: %v", err)
	}
	if err := ns.Unmount(srcDir, "alloc/data"); err != nil {
		t.Fatalf("Unmount: %v", err)
	}
	if err := ns.Mount(srcDir, "alloc/data"); err != nil {
		t.Fatalf("Mount: %v", err)
	}
	got, err := os.ReadFile(sb.inSandbox("alloc/data/repo.txt"))
	if err != nil || string(got) != "cloned" {
		t.Fatalf("the sandbox does not see the host's file: %q %v", got, err)
	}
	if err := os.WriteFile(sb.inSandbox("alloc/data/result.txt"), []byte("done"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(src, "result.txt")); err != nil || string(got) != "done" {
		t.Fatalf("what the sandbox wrote is not in the host dir: %q %v", got, err)
	}
	if _, err := os.Stat(filepath.Join(sb.alloc, "data", "repo.txt")); err == nil {
		t.Fatal("the mount is visible on the host, under the sandbox's alloc dir")
	}
	// In the sandbox nothing on it runs setuid or opens as a device.
	var fs unix.Statfs_t
	if err := unix.Statfs(sb.inSandbox("alloc/data"), &fs); err != nil || fs.Flags&unix.ST_NOSUID == 0 || fs.Flags&unix.ST_NODEV == 0 {
		t.Fatalf("the mount's flags %#x (%v), want nosuid and nodev", fs.Flags, err)
	}

	// Opened again by its pid, as a start does after priming found it.
	again, err := Open(ns.PID(), openDir(t, sb.alloc), "alloc")
	if err != nil {
		t.Fatalf("Open(%d): %v", ns.PID(), err)
	}
	defer again.Close()
	if _, err := Open(os.Getpid(), openDir(t, sb.alloc), "alloc"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Open of a process that is not the sandbox = %v, want ErrNotFound", err)
	}
	if err := again.Unmount(srcDir, "alloc/data"); err != nil {
		t.Fatalf("Unmount: %v", err)
	}
	if _, err := os.Stat(sb.inSandbox("alloc/data/repo.txt")); err == nil {
		t.Fatal("the sandbox still sees the host dir after Unmount")
	}
	if _, err := os.Stat(filepath.Join(src, "result.txt")); err != nil {
		t.Fatalf("Unmount lost what the sandbox wrote: %v", err)
	}
	// The threads that joined the sandbox's namespace are gone: the
	// process's own (its main thread's) is where it was.
	if now, err := nsInode("self"); err != nil || now != selfNS {
		t.Fatalf("the process's mount namespace is now %d (%v), was %d", now, err, selfNS)
	}
}

func TestFindAcceptsOnlyTheSandboxItself(t *testing.T) {
	needRoot(t)
	t.Run("raw_exec: the plugin's own namespace", func(t *testing.T) {
		host := startSandbox(t, "alloc-3", false, "")
		if _, err := Find("alloc-3", openDir(t, host.alloc), "alloc"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Find = %v, want ErrNotFound (never mount on the host)", err)
		}
	})
	t.Run("a forged NOMAD_ALLOC_ID in another sandbox", func(t *testing.T) {
		// The forger's env names alloc-2, but its root holds its own alloc
		// dir: only the real sandbox is accepted. The forger started first,
		// so Find meets it first.
		forger := startSandbox(t, "alloc-2", true, "nobody-nnp")
		real := startSandbox(t, "alloc-2", true, "nobody-nnp")
		ns, err := Find("alloc-2", openDir(t, real.alloc), "alloc")
		if err != nil {
			t.Fatalf("Find: %v", err)
		}
		defer ns.Close()
		if ns.pid != real.pid {
			t.Fatalf("Find chose pid %d, want the sandbox's %d (forger %d)", ns.pid, real.pid, forger.pid)
		}
		if _, err := Find("alloc-2", openDir(t, t.TempDir()), "alloc"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Find for an alloc dir no sandbox has = %v, want ErrNotFound", err)
		}
	})
	t.Run("a symlink planted where the mount goes", func(t *testing.T) {
		sb := startSandbox(t, "alloc-4", true, "nobody-nnp")
		secret := t.TempDir()
		if err := os.Remove(filepath.Join(sb.alloc, "data")); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(secret, filepath.Join(sb.alloc, "data")); err != nil {
			t.Fatal(err)
		}
		ns, err := Find("alloc-4", openDir(t, sb.alloc), "alloc")
		if err != nil {
			t.Fatalf("Find: %v", err)
		}
		defer ns.Close()
		if err := ns.Mount(openDir(t, t.TempDir()), "alloc/data"); !errors.Is(err, unix.ELOOP) {
			t.Fatalf("Mount over a symlink = %v, want ELOOP", err)
		}
	})
}

// A sandbox whose process is root, or could become it, does not get the
// host dir mounted: what it wrote there would be the host's to trust.
func TestMountRefusesAPrivilegedSandbox(t *testing.T) {
	needRoot(t)
	for _, user := range []string{"", "nobody"} {
		t.Run("user="+user, func(t *testing.T) {
			sb := startSandbox(t, "alloc-5"+user, true, user)
			ns, err := Find("alloc-5"+user, openDir(t, sb.alloc), "alloc")
			if err != nil {
				t.Fatalf("Find: %v", err)
			}
			defer ns.Close()
			src := t.TempDir()
			if err := ns.Mount(openDir(t, src), "alloc/data"); !errors.Is(err, ErrPrivileged) {
				t.Fatalf("Mount = %v, want ErrPrivileged", err)
			}
			if err := os.WriteFile(sb.inSandbox("alloc/data/x"), []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(filepath.Join(src, "x")); err == nil {
				t.Fatal("the host dir was mounted anyway")
			}
		})
	}
}

// What privilege reads in a process's status, as the kernel writes it.
func TestPrivilege(t *testing.T) {
	status := func(uid, caps, amb, bnd, nnp string) []byte {
		return []byte("Name:\tsh\nUid:\t" + uid + "\t" + uid + "\t" + uid + "\t" + uid + "\nGid:\t65534\t65534\t65534\t65534\n" +
			"CapInh:\t0000000000000000\nCapPrm:\t" + caps + "\nCapEff:\t" + caps + "\nCapBnd:\t" + bnd + "\nCapAmb:\t" + amb + "\nNoNewPrivs:\t" + nnp + "\n")
	}
	const none, dflt = "0000000000000000", "00000000a80425fb"
	for _, c := range []struct {
		name   string
		status []byte
		want   string // in the reason; "" unprivileged
	}{
		{"root", status("0", dflt, none, dflt, "0"), "runs as root"},
		{"exec as nobody with Nomad's default capabilities (ambient)", status("65534", dflt, dflt, dflt, "0"), "holds capabilities"},
		{"nobody, no capabilities, no_new_privs unset", status("65534", none, none, dflt, "0"), "can gain capabilities"},
		{"nobody, no_new_privs", status("65534", none, none, dflt, "1"), ""},
		{"nobody, empty bounding set", status("65534", none, none, none, "0"), ""},
	} {
		why, err := privilege(c.status)
		if err != nil || c.want == "" && why != "" || c.want != "" && !strings.Contains(why, c.want) {
			t.Errorf("%s: %q %v, want %q", c.name, why, err, c.want)
		}
	}
	if _, err := privilege([]byte("Name:\tsh\n")); err == nil {
		t.Error("a status without credentials: no error")
	}
}
