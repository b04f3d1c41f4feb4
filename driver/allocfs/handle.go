package allocfs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/agentkernel/agentkernel-pool/internal/untrusted"
)

// A Handle is a directory beneath a Dir's root held open, for working on
// many names in it without resolving its path again for each: a tree copy
// opens each directory once and reaches the names in it relative to the
// handle. Every method takes a single name (no "/", not "." or ".."), looked
// up in the held directory without following a symlink there, so a Handle
// reaches only its own directory's entries and, through Sub, the
// directories beneath it. The directory itself was opened beneath the root
// with no symlink in its path (as Dir's methods resolve paths); a sandbox
// renaming it afterwards moves it within what the sandbox can reach.
type Handle struct {
	d   Dir
	rel string // relative to the root, for messages; "." for the root
	fd  int    // O_PATH: for *at calls only
}

// OpenHandle opens the directory rel beneath the root ("." or "" for the
// root itself).
func (d Dir) OpenHandle(rel string) (*Handle, error) {
	var fd int
	var err error
	if rel == "" || rel == "." {
		rel = "."
		fd, err = unix.Open(d.root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, &fs.PathError{Op: "open", Path: d.root, Err: err}
		}
	} else if fd, _, err = d.resolve(rel, true); err != nil {
		return nil, err
	}
	return &Handle{d: d, rel: rel, fd: fd}, nil
}

// Close closes the handle; it may be called more than once.
func (h *Handle) Close() error {
	if h == nil || h.fd < 0 {
		return nil
	}
	err := unix.Close(h.fd)
	h.fd = -1
	return err
}

// Rel is the directory's path relative to the root ("." for the root).
func (h *Handle) Rel() string { return h.rel }

// relOf names an entry of h relative to the root, for messages.
func (h *Handle) relOf(name string) string {
	if h.rel == "." {
		return name
	}
	return h.rel + "/" + name
}

// checkName accepts a single path component.
func (h *Handle) checkName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("allocfs: %s in %s is not a single name", untrusted.Name(name), untrusted.Name(h.rel))
	}
	return nil
}

// fail is classify for an entry of h.
func (h *Handle) fail(name, op string, err error) error {
	return h.d.classify(h.relOf(name), op, err)
}

// Sub opens the directory name in h. A symlink or anything but a directory
// there is tampering; a missing name is fs.ErrNotExist.
func (h *Handle) Sub(name string) (*Handle, error) {
	if err := h.checkName(name); err != nil {
		return nil, err
	}
	fd, err := openatRetry(h.fd, name, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, h.fail(name, "open", err)
	}
	return &Handle{d: h.d, rel: h.relOf(name), fd: fd}, nil
}

// openatRetry is openat, again after EINTR (a FIFO's open may see one).
func openatRetry(dirfd int, name string, flags int, mode uint32) (int, error) {
	for {
		fd, err := unix.Openat(dirfd, name, flags, mode)
		if !errors.Is(err, unix.EINTR) {
			return fd, err
		}
	}
}

// Lstat describes the entry name (a symlink is not followed).
func (h *Handle) Lstat(name string) (Entry, error) {
	if err := h.checkName(name); err != nil {
		return Entry{}, err
	}
	var st unix.Stat_t
	if err := unix.Fstatat(h.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return Entry{}, h.fail(name, "lstat", err)
	}
	return entryOf(name, &st), nil
}

// Each calls fn for every name in the directory, described by fstatat in
// it (a symlink is not followed; a name gone since the listing is left
// out), in no particular order, until fn's first error, which it returns.
// The names are read dirBatch at a time from a descriptor of its own (the
// listing's offset is per open file), so a directory of a million names
// costs what one of a hundred does; fn may descend meanwhile (Sub, Each).
func (h *Handle) Each(fn func(Entry) error) error {
	fd, err := openatRetry(h.fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return &fs.PathError{Op: "open", Path: h.d.pathOf(h.rel), Err: err}
	}
	f := os.NewFile(uintptr(fd), h.d.pathOf(h.rel))
	defer f.Close()
	return eachName(f, func(n string) error {
		var st unix.Stat_t
		if err := unix.Fstatat(h.fd, n, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			if errors.Is(err, unix.ENOENT) {
				return nil // gone since the listing
			}
			return h.fail(n, "lstat", err)
		}
		return fn(entryOf(n, &st))
	})
}

// openRegular opens the regular file name in h for reading, as Dir.OpenFile
// does (type before open, open.go): an O_PATH descriptor first, which opens
// nothing; anything but a regular file, or one with a second name unless
// hard links are accepted, is refused without having been opened.
func (h *Handle) openRegular(name string) (int, error) {
	if err := h.checkName(name); err != nil {
		return -1, err
	}
	pfd, err := openatRetry(h.fd, name, pathFlags, 0)
	if err != nil {
		return -1, h.fail(name, "open", err)
	}
	defer unix.Close(pfd)
	st, err := pathStat(pfd)
	if err != nil {
		return -1, h.fail(name, "open", err)
	}
	return h.d.openTyped(pfd, st, h.relOf(name), unix.S_IFREG, unix.O_RDONLY)
}

// create creates the file name in h, which must not exist, with mode perm
// and owner uid:gid (-1 keeps the plugin's), both set through the new
// file's descriptor, and returns it open for writing. A name already there
// (a symlink included, never followed) is an error matching fs.ErrExist,
// for the caller to judge.
func (h *Handle) create(name string, perm uint32, uid, gid int) (int, error) {
	if err := h.checkName(name); err != nil {
		return -1, err
	}
	fd, err := openatRetry(h.fd, name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return -1, h.fail(name, "create", err)
	}
	if err := h.setOwnerMode(fd, name, perm, uid, gid); err != nil {
		unix.Close(fd)
		_ = unix.Unlinkat(h.fd, name, 0)
		return -1, err
	}
	return fd, nil
}

// setOwnerMode sets what a new file or directory gets through its
// descriptor: the owner first, since a chown clears setuid and setgid.
func (h *Handle) setOwnerMode(fd int, name string, perm uint32, uid, gid int) error {
	if uid >= 0 || gid >= 0 {
		if err := unix.Fchown(fd, uid, gid); err != nil {
			return &fs.PathError{Op: "chown", Path: h.d.pathOf(h.relOf(name)), Err: err}
		}
	}
	if err := unix.Fchmod(fd, perm); err != nil {
		return &fs.PathError{Op: "chmod", Path: h.d.pathOf(h.relOf(name)), Err: err}
	}
	return nil
}

// Mkdir makes the directory name in h with mode perm and owner uid:gid (-1
// keeps the plugin's), set through its descriptor. A directory already there
// is left as it is; anything else there is an error matching fs.ErrExist.
func (h *Handle) Mkdir(name string, perm uint32, uid, gid int) error {
	if err := h.checkName(name); err != nil {
		return err
	}
	if err := unix.Mkdirat(h.fd, name, 0o700); err != nil {
		if !errors.Is(err, unix.EEXIST) {
			return h.fail(name, "mkdir", err)
		}
		if e, err := h.Lstat(name); err != nil || !e.IsDir() {
			return h.fail(name, "mkdir", unix.EEXIST)
		}
		return nil
	}
	fd, err := openatRetry(h.fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return h.fail(name, "open", err)
	}
	defer unix.Close(fd)
	return h.setOwnerMode(fd, name, perm, uid, gid)
}

// Symlink makes name in h, which must not exist (else an error matching
// fs.ErrExist), a symlink holding target, owned by uid:gid (-1 keeps the
// plugin's). The target is never looked at.
//
// The owner is set through a descriptor, not the name: between symlinkat and
// a chown by name, the other side could put under the name a hard link to a
// host file, which the chown would then give away. The new name is opened
// O_PATH|O_NOFOLLOW (which opens a symlink itself), fstat must find a
// symlink with one name (a hard link to a host symlink has two), and
// fchownat(fd, "", AT_EMPTY_PATH) changes that inode only: whatever the name
// holds by then, nothing but the symlink just checked is changed.
func (h *Handle) Symlink(target, name string, uid, gid int) error {
	if err := h.checkName(name); err != nil {
		return err
	}
	if err := unix.Symlinkat(target, h.fd, name); err != nil {
		return h.fail(name, "symlink", err)
	}
	if uid < 0 && gid < 0 {
		return nil
	}
	if err := h.chownSymlink(name, uid, gid); err != nil {
		_ = unix.Unlinkat(h.fd, name, 0)
		return err
	}
	return nil
}

// chownSymlink sets the owner of the symlink name in h through an O_PATH
// descriptor of it, after fstat found a symlink with one name there.
func (h *Handle) chownSymlink(name string, uid, gid int) error {
	fd, err := openatRetry(h.fd, name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return h.fail(name, "open", err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return h.fail(name, "fstat", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFLNK || st.Nlink != 1 {
		return h.d.tampered(h.relOf(name), "was replaced by "+fileType(st.Mode)+" with "+strconv.FormatUint(uint64(st.Nlink), 10)+" names before its owner was set")
	}
	if err := unix.Fchownat(fd, "", uid, gid, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return h.fail(name, "chown", err)
	}
	return nil
}

// maxLinkTarget bounds what a symlink may hold.
const maxLinkTarget = 4096

// Readlink reads the symlink name in h.
func (h *Handle) Readlink(name string) (string, error) {
	if err := h.checkName(name); err != nil {
		return "", err
	}
	buf := make([]byte, maxLinkTarget+1)
	n, err := unix.Readlinkat(h.fd, name, buf)
	if err != nil {
		return "", h.fail(name, "readlink", err)
	}
	if n > maxLinkTarget {
		return "", h.d.tampered(h.relOf(name), "is a symlink longer than 4096 bytes")
	}
	return string(buf[:n]), nil
}

// Rename moves the name from to to, both in h, replacing what to names
// unless it is a directory (an error matching unix.EISDIR when from is not
// one) or a non-empty one.
func (h *Handle) Rename(from, to string) error {
	if err := h.checkName(from); err != nil {
		return err
	}
	if err := h.checkName(to); err != nil {
		return err
	}
	if err := unix.Renameat(h.fd, from, h.fd, to); err != nil {
		return h.fail(to, "rename", err)
	}
	return nil
}

// Remove removes the name (never what a symlink there points to; not a
// directory); a missing name is no error.
func (h *Handle) Remove(name string) error {
	if err := h.checkName(name); err != nil {
		return err
	}
	if err := unix.Unlinkat(h.fd, name, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return h.fail(name, "remove", err)
	}
	return nil
}
