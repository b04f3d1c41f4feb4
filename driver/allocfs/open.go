package allocfs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Type before open. Opening a file is not a neutral act: opening a device
// runs its driver's open (a virtual console is allocated, a watchdog is
// armed and reboots the node when the descriptor closes), opening a FIFO
// releases a writer blocked on it. The plugin, root and outside any device
// cgroup, must never do that for a sandbox. So a sandbox path is first
// resolved to an O_PATH descriptor, which opens nothing (no driver, no FIFO,
// no inotify open event); fstat says what it is; only a regular file (or a
// directory where one is wanted) with one name is then opened for I/O,
// through /proc/self/fd/N of that descriptor: the magic link reopens the
// very inode the descriptor holds, whatever the sandbox renamed since, and
// a second fstat checks it is the same. The reopen adds O_NOCTTY (a tty
// never becomes the plugin's controlling terminal) and O_NONBLOCK (nothing
// waits). Every open that takes a path inside a sandbox for I/O is one of
// these; opens with O_PATH or with O_DIRECTORY, which the kernel refuses on
// anything but a directory before opening it, need none.

// maxOpenRetries bounds retries of openat2's EAGAIN, which it returns when a
// rename raced the resolution; a sandbox renaming in a loop gets an error.
const maxOpenRetries = 64

// pathFlags opens a name as a handle only: nothing is opened for I/O.
const pathFlags = unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC

// resolve opens rel beneath the root as an O_PATH descriptor (O_DIRECTORY
// too with dir) without following any symlink, and says what it is. A
// symlink, as the last name too, is ELOOP, classified as tampering.
func (d Dir) resolve(rel string, dir bool) (int, *unix.Stat_t, error) {
	if err := checkRel(rel); err != nil {
		return -1, nil, err
	}
	root, err := unix.Open(d.root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, nil, &fs.PathError{Op: "open", Path: d.root, Err: err}
	}
	defer unix.Close(root)
	flags := pathFlags
	if dir {
		flags |= unix.O_DIRECTORY
	}
	var fd int
	if d.walk {
		fd, err = walkBeneath(root, rel, flags)
	} else {
		fd, err = openBeneath(root, rel, flags)
	}
	if err != nil {
		return -1, nil, d.classify(rel, "open", err)
	}
	st, err := pathStat(fd)
	if err != nil {
		unix.Close(fd)
		return -1, nil, d.classify(rel, "open", err)
	}
	return fd, st, nil
}

// pathStat describes an O_PATH descriptor. O_PATH|O_NOFOLLOW opens a
// symlink as itself: that is ELOOP, as a symlink met on the way is.
func pathStat(fd int) (*unix.Stat_t, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		return nil, unix.ELOOP
	}
	return &st, nil
}

// openBeneath opens rel (clean, relative, no "..") beneath dirfd with flags
// (pathFlags, maybe O_DIRECTORY), following no symlink: openat2 where the
// kernel has it, else the component walk.
func openBeneath(dirfd int, rel string, flags int) (int, error) {
	how := unix.OpenHow{
		Flags:   uint64(flags),
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	}
	for i := 0; ; i++ {
		fd, err := unix.Openat2(dirfd, rel, &how)
		switch {
		case err == nil:
			return fd, nil
		case errors.Is(err, unix.ENOSYS):
			return walkBeneath(dirfd, rel, flags)
		case (errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR)) && i < maxOpenRetries:
			continue
		default:
			return -1, err
		}
	}
}

// walkBeneath is openBeneath without openat2 (kernels before 5.6): each
// directory component is opened O_PATH|O_DIRECTORY|O_NOFOLLOW relative to
// the one before, the last with flags. A symlink on the way is ELOOP, as
// openat2 says; ".." never appears (checkRel), so the walk cannot leave
// dirfd.
func walkBeneath(dirfd int, rel string, flags int) (int, error) {
	parts := strings.Split(rel, "/")
	cur := dirfd
	for _, p := range parts[:len(parts)-1] {
		next, err := unix.Openat(cur, p, pathFlags|unix.O_DIRECTORY, 0)
		if errors.Is(err, unix.ENOTDIR) {
			var st unix.Stat_t
			if unix.Fstatat(cur, p, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
				err = unix.ELOOP
			}
		}
		if cur != dirfd {
			unix.Close(cur)
		}
		if err != nil {
			return -1, err
		}
		cur = next
	}
	fd, err := unix.Openat(cur, parts[len(parts)-1], flags, 0)
	if cur != dirfd {
		unix.Close(cur)
	}
	return fd, err
}

// reopen opens for I/O with flags the inode that pfd, an O_PATH descriptor
// described by st, holds: through /proc/self/fd, with O_NOCTTY and
// O_NONBLOCK, then checks by fstat that it opened that inode. Its errors
// never match fs.ErrNotExist: a file that is there is not missing because
// /proc is.
func reopen(pfd int, st *unix.Stat_t, flags int) (int, error) {
	p := "/proc/self/fd/" + strconv.Itoa(pfd)
	var fd int
	var err error
	for {
		fd, err = unix.Open(p, flags|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		return -1, fmt.Errorf("reopen through %s: %v", p, err)
	}
	var now unix.Stat_t
	if err := unix.Fstat(fd, &now); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("fstat the reopened file: %v", err)
	}
	if now.Dev != st.Dev || now.Ino != st.Ino || now.Mode&unix.S_IFMT != st.Mode&unix.S_IFMT {
		unix.Close(fd)
		return -1, errors.New("the reopened file is not the one resolved")
	}
	*st = now
	return fd, nil
}

// check refuses what is not of type typ, and a regular file that another
// name links to (a hard link would make the plugin read or write a file it
// did not mean) unless hard links are accepted.
func (d Dir) check(st *unix.Stat_t, rel string, typ uint32) error {
	if st.Mode&unix.S_IFMT != typ {
		return d.tampered(rel, "is "+fileType(st.Mode)+", not "+fileType(typ))
	}
	if typ == unix.S_IFREG && st.Nlink > 1 && !d.links {
		return d.tampered(rel, "has "+strconv.FormatUint(uint64(st.Nlink), 10)+" hard links")
	}
	return nil
}

// openTyped opens the O_PATH descriptor pfd (rel, described by st) for I/O
// with flags once it is of type typ (check), and checks again what it
// opened. It does not close pfd.
func (d Dir) openTyped(pfd int, st *unix.Stat_t, rel string, typ uint32, flags int) (int, error) {
	if err := d.check(st, rel, typ); err != nil {
		return -1, err
	}
	fd, err := reopen(pfd, st, flags)
	if err != nil {
		return -1, &fs.PathError{Op: "open", Path: d.pathOf(rel), Err: err}
	}
	if err := d.check(st, rel, typ); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// open opens rel beneath the root for I/O with flags once it is of type
// typ (see the top of this file).
func (d Dir) open(rel string, typ uint32, flags int) (int, error) {
	pfd, st, err := d.resolve(rel, typ == unix.S_IFDIR)
	if err != nil {
		return -1, err
	}
	defer unix.Close(pfd)
	return d.openTyped(pfd, st, rel, typ, flags)
}

// OpenFile opens a regular file beneath the root for reading; anything else
// there (a device, a FIFO, a socket, a symlink, a second name of a file) is
// refused without having been opened.
func (d Dir) OpenFile(rel string) (*os.File, error) {
	fd, err := d.open(rel, unix.S_IFREG, unix.O_RDONLY)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), d.pathOf(rel)), nil
}

// ReadRecord reads a small regular file whole: at most limit bytes, else the
// sandbox is tampering (the plugin's records are one line).
func (d Dir) ReadRecord(rel string, limit int) ([]byte, error) {
	f, err := d.OpenFile(rel)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	buf := make([]byte, limit+1)
	n := 0
	for n < len(buf) {
		m, err := f.Read(buf[n:])
		n += m
		if err != nil || m == 0 {
			break
		}
	}
	if n > limit {
		return nil, d.tampered(rel, "is larger than "+strconv.Itoa(limit)+" bytes")
	}
	return buf[:n], nil
}

// OpenDir opens a directory beneath the root (for listing or watching it
// through /proc/self/fd).
func (d Dir) OpenDir(rel string) (*os.File, error) {
	fd, err := d.open(rel, unix.S_IFDIR, unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), d.pathOf(rel)), nil
}
