package nsmount

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// A sandbox for the tests: this test binary run again in a mount namespace of
// its own, chrooted into a dir whose alloc/ plays the sandbox's shared alloc
// dir, with the sandbox's NOMAD_ALLOC_ID in its environment.
const childEnv = "NSMOUNT_TEST_CHROOT"

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
	fmt.Println("ready")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n') // until the test ends
	return 0
}

type sandbox struct {
	root  string // its root, on the host
	alloc string // its shared alloc dir, on the host
	pid   int
}

// startSandbox runs a sandbox process whose env names allocID; newNS false
// leaves it in the test's own mount namespace (raw_exec).
func startSandbox(t *testing.T, allocID string, newNS bool) *sandbox {
	t.Helper()
	root := t.TempDir()
	alloc := filepath.Join(root, "alloc")
	if err := os.MkdirAll(filepath.Join(alloc, "data"), 0o777); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = []string{childEnv + "=" + root, "NOMAD_ALLOC_ID=" + allocID}
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
	sb := startSandbox(t, "alloc-1", true)
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
}

func TestFindAcceptsOnlyTheSandboxItself(t *testing.T) {
	needRoot(t)
	t.Run("raw_exec: the plugin's own namespace", func(t *testing.T) {
		host := startSandbox(t, "alloc-3", false)
		if _, err := Find("alloc-3", openDir(t, host.alloc), "alloc"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Find = %v, want ErrNotFound (never mount on the host)", err)
		}
	})
	t.Run("a forged NOMAD_ALLOC_ID in another sandbox", func(t *testing.T) {
		// The forger's env names alloc-2, but its root holds its own alloc
		// dir: only the real sandbox is accepted. The forger started first,
		// so Find meets it first.
		forger := startSandbox(t, "alloc-2", true)
		real := startSandbox(t, "alloc-2", true)
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
		sb := startSandbox(t, "alloc-4", true)
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
