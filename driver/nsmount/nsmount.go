// Package nsmount shares a directory of the host with an isolated sandbox
// without copying it: a detached clone of the directory (open_tree(2) with
// OPEN_TREE_CLONE) is attached inside the sandbox's own mount namespace
// (move_mount(2), from a thread that joined that namespace). The mount exists
// only there: nothing appears on the host, and it ends with the namespace.
//
// Finding the namespace is the delicate part. A sandbox allocation's
// processes are found by their environment (NOMAD_ALLOC_ID), which any
// process can forge; so a candidate is accepted only when its root holds, at
// the place Nomad mounts the allocation's shared dir ("alloc"), the very
// directory the host knows as that allocation's shared dir (same device and
// inode). Another sandbox cannot make that true: it cannot mount. Processes in
// the plugin's own mount namespace (raw_exec) are never candidates, so nothing
// is ever mounted on the host.
//
// What the sandbox writes into the mount lands in the host directory as it
// wrote it: a process there that is root, holds a capability or can gain one
// could leave a root-owned setuid file or a device node for the host to trust.
// Mount therefore refuses (ErrPrivileged) a namespace whose process is not
// plainly unprivileged on the host (creds.go), and mounts the clone nosuid and
// nodev, so that inside the sandbox nothing on it runs setuid or opens as a
// device either.
//
// Every path inside the sandbox is resolved beneath its root without following
// a symlink (openat2), and the unmount checks that what it detaches is the
// mount it attached. It needs Linux 5.12 (mount_setattr; openat2 came in 5.6,
// open_tree and move_mount in 5.2) and root; where either is missing, Find or
// Mount fails and the caller copies instead.
package nsmount

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"

	"golang.org/x/sys/unix"
)

// ErrNotFound means no process of the sandbox is visible on the host in a
// mount namespace of its own: the sandbox runs under another kernel (gVisor),
// shares the host's filesystem (raw_exec), or has no process left.
var ErrNotFound = errors.New("no mount namespace of the sandbox is visible on the host")

// Namespace is a sandbox's mount namespace, held open.
type Namespace struct {
	pid  int
	proc *os.File // /proc/<pid>: ns and root are opened through it, so all three are the same process's
	ns   *os.File // /proc/<pid>/ns/mnt
	root *os.File // the process's root, O_PATH
}

// PID is the process through which the namespace was found.
func (n *Namespace) PID() int { return n.pid }

// Open returns the mount namespace of process pid if it is the sandbox's (as
// Find would accept it): found once off the hot path, the sandbox is opened
// again in microseconds where Find costs a look at every process.
func Open(pid int, allocDir *os.File, allocRel string) (*Namespace, error) {
	want, self, err := lookFor(allocDir)
	if err != nil {
		return nil, err
	}
	n, err := open(pid, map[uint64]bool{self: true})
	if err != nil || n == nil {
		return nil, ErrNotFound
	}
	if !n.holds(allocRel, want) {
		n.Close()
		return nil, ErrNotFound
	}
	return n, nil
}

// maxEnviron bounds how much of a process's environment Find reads.
const maxEnviron = 1 << 20

// Find returns the mount namespace of the sandbox allocation allocID, whose
// shared alloc dir the host has open as allocDir and which the sandbox sees
// at allocRel beneath its root ("alloc" under exec and docker).
func Find(allocID string, allocDir *os.File, allocRel string) (*Namespace, error) {
	want, self, err := lookFor(allocDir)
	if err != nil {
		return nil, err
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	needle := []byte("NOMAD_ALLOC_ID=" + allocID + "\x00")
	seen := map[uint64]bool{self: true}
	for _, p := range procs {
		// Most processes share the plugin's namespace: a stat rules them
		// out before their environment is read (a walk of their memory).
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		if ino, err := nsInode(p.Name()); err != nil || seen[ino] || !hasEnv(pid, needle) {
			continue
		}
		n, err := open(pid, seen)
		if err != nil || n == nil {
			continue
		}
		if n.holds(allocRel, want) {
			return n, nil
		}
		n.Close()
	}
	return nil, ErrNotFound
}

// lookFor is what a search needs: the sandbox's alloc dir as the host sees
// it, and the plugin's own mount namespace, which is never the sandbox's:
// the calling thread's (thread-self; a thread that joined a sandbox's
// namespace never runs anything else, see inside).
func lookFor(allocDir *os.File) (want *unix.Stat_t, self uint64, err error) {
	if want, err = fstat(int(allocDir.Fd())); err != nil {
		return nil, 0, fmt.Errorf("stat the sandbox's alloc dir: %w", err)
	}
	if self, err = nsInode("thread-self"); err != nil {
		return nil, 0, fmt.Errorf("read the plugin's mount namespace: %w", err)
	}
	return want, self, nil
}

// hasEnv says whether the process's environment holds the variable needle
// ("NAME=value\x00").
func hasEnv(pid int, needle []byte) bool {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return false
	}
	defer f.Close()
	env, err := io.ReadAll(io.LimitReader(f, maxEnviron))
	if err != nil {
		return false
	}
	if !bytes.HasSuffix(env, []byte{0}) {
		env = append(env, 0)
	}
	return bytes.HasPrefix(env, needle) || bytes.Contains(env, append([]byte{0}, needle...))
}

// open opens the process's namespace and root, unless its namespace was seen.
func open(pid int, seen map[uint64]bool) (*Namespace, error) {
	dir := "/proc/" + strconv.Itoa(pid)
	pfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	proc := os.NewFile(uintptr(pfd), dir)
	nfd, err := unix.Openat(pfd, "ns/mnt", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		proc.Close()
		return nil, err
	}
	ns := os.NewFile(uintptr(nfd), dir+"/ns/mnt")
	st, err := fstat(nfd)
	if err != nil || seen[st.Ino] {
		ns.Close()
		proc.Close()
		return nil, err
	}
	seen[st.Ino] = true
	rfd, err := unix.Openat(pfd, "root", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		ns.Close()
		proc.Close()
		return nil, err
	}
	return &Namespace{pid: pid, proc: proc, ns: ns, root: os.NewFile(uintptr(rfd), dir+"/root")}, nil
}

// holds says whether rel beneath the namespace's root is the directory want.
func (n *Namespace) holds(rel string, want *unix.Stat_t) bool {
	fd, err := n.openBeneath(rel)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	st, err := fstat(fd)
	return err == nil && st.Dev == want.Dev && st.Ino == want.Ino
}

// openBeneath opens rel beneath the namespace's root, O_PATH, following no
// symlink.
func (n *Namespace) openBeneath(rel string) (int, error) {
	how := unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	}
	for range 64 {
		fd, err := unix.Openat2(int(n.root.Fd()), filepath.Clean(rel), &how)
		if err != unix.EAGAIN && err != unix.EINTR {
			return fd, err
		}
	}
	return -1, unix.EAGAIN
}

// Mount attaches a clone of the host directory src at rel beneath the
// sandbox's root (an existing directory, which it covers), nosuid and nodev.
// The sandbox's processes see src's files from then on, and what they write
// lands in src. A namespace whose process could write there what the host
// would trust is refused with an error matching ErrPrivileged.
func (n *Namespace) Mount(src *os.File, rel string) error {
	if err := n.unprivileged(); err != nil {
		return err
	}
	tree, err := unix.OpenTree(int(src.Fd()), "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_EMPTY_PATH|unix.AT_RECURSIVE)
	if err != nil {
		return fmt.Errorf("open_tree %s: %w", src.Name(), err)
	}
	defer unix.Close(tree)
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV}
	if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &attr); err != nil {
		return fmt.Errorf("mount_setattr nosuid,nodev on the clone of %s: %w", src.Name(), err)
	}
	target, err := n.openBeneath(rel)
	if err != nil {
		return fmt.Errorf("open %s in the sandbox: %w", rel, err)
	}
	defer unix.Close(target)
	return n.inside(func() error {
		if err := unix.MoveMount(tree, "", target, "", unix.MOVE_MOUNT_F_EMPTY_PATH|unix.MOVE_MOUNT_T_EMPTY_PATH); err != nil {
			return fmt.Errorf("move_mount onto %s in the sandbox: %w", rel, err)
		}
		return nil
	})
}

// Unmount detaches the mount at rel beneath the sandbox's root if it is src
// (same device and inode); anything else there is left alone. Processes that
// still hold files open keep them; no new lookup reaches src.
func (n *Namespace) Unmount(src *os.File, rel string) error {
	want, err := fstat(int(src.Fd()))
	if err != nil {
		return err
	}
	dir, base := filepath.Split(filepath.Clean(rel))
	if dir == "" {
		dir = "."
	}
	parent, err := n.openBeneath(dir)
	if err != nil {
		return fmt.Errorf("open %s in the sandbox: %w", dir, err)
	}
	defer unix.Close(parent)
	if !n.holds(rel, want) {
		return nil
	}
	return n.inside(func() error {
		// The thread's cwd is its own (CLONE_FS unshared): the parent, so
		// the unmount resolves one name and follows no symlink.
		if err := unix.Fchdir(parent); err != nil {
			return fmt.Errorf("enter %s in the sandbox: %w", dir, err)
		}
		if err := unix.Unmount(base, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW); err != nil {
			return fmt.Errorf("unmount %s in the sandbox: %w", rel, err)
		}
		return nil
	})
}

// inside runs fn on a thread that joined the namespace. The thread is never
// given back to the Go runtime: it ends with the goroutine. (The main thread
// cannot end: the runtime would park it, in the sandbox's namespace, for the
// plugin's life, holding that namespace and keeping /proc/self/ns/mnt,
// which is the main thread's, pointing at it. init keeps it off this work.)
func (n *Namespace) inside(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // no unlock: the thread dies, its namespace with it
		// A thread sharing its filesystem attributes with others cannot
		// change its mount namespace (setns(2)): unshare them first.
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			errc <- fmt.Errorf("unshare CLONE_FS: %w", err)
			return
		}
		if err := unix.Setns(int(n.ns.Fd()), unix.CLONE_NEWNS); err != nil {
			errc <- fmt.Errorf("join the sandbox's mount namespace: %w", err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// Close releases the namespace.
func (n *Namespace) Close() {
	n.ns.Close()
	n.root.Close()
	n.proc.Close()
}

// init locks the main goroutine to the main thread (init functions run on
// it), so no other goroutine, inside's among them, ever runs there.
func init() { runtime.LockOSThread() }

func nsInode(pid string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/"+pid+"/ns/mnt", &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

func fstat(fd int) (*unix.Stat_t, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, err
	}
	return &st, nil
}
