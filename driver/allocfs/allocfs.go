// Package allocfs is the sandbox boundary on the host: every access the plugin
// makes to a file inside a sandbox allocation's directory goes through a Dir,
// or a Handle (a directory a Dir opened, held for working on many names in
// it).
//
// The plugin runs as root on the host, and everything beneath a sandbox's
// allocation directory can be rewritten at any moment by the untrusted command
// running in it: a file can become a symlink to a host file, a FIFO, a device
// or a directory between two looks. A Dir therefore resolves every path beneath
// its root without following a symlink in any component (openat2 with
// RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS, or an
// O_NOFOLLOW walk with openat where openat2 is missing), checks what it opened
// with fstat before using it, reads only regular files and only as much as a
// record may hold, creates files exclusively, and changes modes and owners only
// through the descriptor it created. What it refuses is a *TamperedError, whose
// message names the sandbox and the file and never quotes what was there.
package allocfs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrTampered matches every *TamperedError.
var ErrTampered = errors.New("sandbox tampered with its files")

// TamperedError says a sandbox put something where the plugin expects one of
// its own files: a symlink, a special file, a hard link, an oversized record.
type TamperedError struct {
	Alloc string // sandbox allocation id
	File  string // path relative to the allocation dir
	Why   string // what was found, never the content
}

func (e *TamperedError) Error() string {
	return fmt.Sprintf("sandbox %s tampered with %s: %s", short(e.Alloc), e.File, e.Why)
}

// Is makes errors.Is(err, ErrTampered) true.
func (e *TamperedError) Is(target error) bool { return target == ErrTampered }

// Dir is a sandbox allocation's directory on the host. Its root path is trusted
// (Nomad made it); nothing beneath it is.
type Dir struct {
	root  string
	alloc string
	links bool // regular files with more than one name are accepted
}

// New returns the boundary of the allocation allocID whose directory on this
// host is root.
func New(root, allocID string) Dir { return Dir{root: root, alloc: allocID} }

// HardLinksOK reports whether d accepts regular files with more than one name.
func (d Dir) HardLinksOK() bool { return d.links }

// WithHardLinks returns d accepting regular files that have more than one
// name: for a tree the plugin reads but no untrusted process could have
// linked into (a task's own dir, which holds the job's unpacked artifacts).
func (d Dir) WithHardLinks() Dir {
	d.links = true
	return d
}

// maxOpenRetries bounds retries of openat2's EAGAIN, which it returns when a
// rename raced the resolution; a sandbox renaming in a loop gets an error.
const maxOpenRetries = 64

// open opens rel beneath the root without following any symlink.
func (d Dir) open(rel string, flags int, mode uint32) (int, error) {
	if err := checkRel(rel); err != nil {
		return -1, err
	}
	root, err := unix.Open(d.root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, &fs.PathError{Op: "open", Path: d.root, Err: err}
	}
	defer unix.Close(root)
	fd, err := openBeneath(root, rel, flags, mode)
	if err != nil {
		return -1, d.classify(rel, "open", err)
	}
	return fd, nil
}

// openBeneath opens rel (clean, relative, no "..") beneath dirfd, following no
// symlink: openat2 where the kernel has it, else a component walk.
func openBeneath(dirfd int, rel string, flags int, mode uint32) (int, error) {
	how := unix.OpenHow{
		Flags:   uint64(flags | unix.O_CLOEXEC | unix.O_NOFOLLOW),
		Mode:    uint64(mode),
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	}
	for i := 0; ; i++ {
		fd, err := unix.Openat2(dirfd, rel, &how)
		switch {
		case err == nil:
			return fd, nil
		case errors.Is(err, unix.ENOSYS):
			return walkBeneath(dirfd, rel, flags, mode)
		case (errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR)) && i < maxOpenRetries:
			continue
		default:
			return -1, err
		}
	}
}

// walkBeneath is openBeneath without openat2: each directory component is
// opened O_PATH|O_DIRECTORY|O_NOFOLLOW relative to the one before, the last
// with O_NOFOLLOW. A symlink anywhere fails (ENOTDIR or ELOOP); ".." never
// appears (checkRel), so the walk cannot leave dirfd.
func walkBeneath(dirfd int, rel string, flags int, mode uint32) (int, error) {
	parts := strings.Split(rel, "/")
	cur := dirfd
	for _, p := range parts[:len(parts)-1] {
		next, err := unix.Openat(cur, p, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if cur != dirfd {
			unix.Close(cur)
		}
		if err != nil {
			return -1, err
		}
		cur = next
	}
	fd, err := unix.Openat(cur, parts[len(parts)-1], flags|unix.O_NOFOLLOW|unix.O_CLOEXEC, mode)
	if cur != dirfd {
		unix.Close(cur)
	}
	return fd, err
}

// checkRel accepts the paths the plugin builds itself: relative, clean, no "..".
func checkRel(rel string) error {
	if rel == "" || rel == "." || path.IsAbs(rel) || path.Clean(rel) != rel || rel == ".." ||
		strings.HasPrefix(rel, "../") || strings.Contains(rel, "/../") || strings.HasSuffix(rel, "/..") {
		return fmt.Errorf("allocfs: %q is not a clean relative path", rel)
	}
	return nil
}

// classify turns what the kernel said into an error: a symlink, a non-directory
// where a directory belongs or an escape is tampering; a missing file stays
// fs.ErrNotExist.
func (d Dir) classify(rel, op string, err error) error {
	switch {
	case errors.Is(err, unix.ELOOP):
		return d.tampered(rel, "a symlink is in its path")
	case errors.Is(err, unix.EXDEV):
		return d.tampered(rel, "its path leads out of the allocation dir")
	case errors.Is(err, unix.ENOTDIR):
		return d.tampered(rel, "a component of its path is not a directory")
	}
	return &fs.PathError{Op: op, Path: path.Join(d.root, rel), Err: err}
}

func (d Dir) tampered(rel, why string) error {
	return &TamperedError{Alloc: d.alloc, File: rel, Why: why}
}

// fileType names a stat mode's type for errors.
func fileType(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFIFO:
		return "a FIFO"
	case unix.S_IFCHR:
		return "a character device"
	case unix.S_IFBLK:
		return "a block device"
	case unix.S_IFSOCK:
		return "a socket"
	case unix.S_IFLNK:
		return "a symlink"
	case unix.S_IFREG:
		return "a regular file"
	}
	return "of unknown type"
}

// expect checks what fd is: its type, and for a regular file that no other
// name links to it (a hard link would make the plugin read or write a file it
// did not mean).
func (d Dir) expect(fd int, rel string, typ uint32) (*unix.Stat_t, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, &fs.PathError{Op: "fstat", Path: path.Join(d.root, rel), Err: err}
	}
	if st.Mode&unix.S_IFMT != typ {
		return nil, d.tampered(rel, "is "+fileType(st.Mode)+", not "+fileType(typ))
	}
	if typ == unix.S_IFREG && st.Nlink > 1 && !d.links {
		return nil, d.tampered(rel, "has "+strconv.FormatUint(uint64(st.Nlink), 10)+" hard links")
	}
	return &st, nil
}

// OpenFile opens a regular file beneath the root for reading. O_NONBLOCK keeps
// a FIFO planted in its place from blocking the open; fstat then refuses it.
func (d Dir) OpenFile(rel string) (*os.File, error) {
	fd, err := d.open(rel, unix.O_RDONLY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	if _, err := d.expect(fd, rel, unix.S_IFREG); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), path.Join(d.root, rel)), nil
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
	fd, err := d.open(rel, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), path.Join(d.root, rel)), nil
}

// Exists reports whether rel names anything (a symlink included, which is not
// followed); a symlink or non-directory in its parents is tampering.
func (d Dir) Exists(rel string) (bool, error) {
	parent, base := path.Split(rel)
	pfd, err := d.parent(rel, parent)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
		return false, err
	}
	defer unix.Close(pfd)
	var st unix.Stat_t
	err = unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, unix.ENOENT):
		return false, nil
	}
	return false, d.classify(rel, "stat", err)
}

// parent opens the directory rel's parent for *at calls on its last name.
func (d Dir) parent(rel, parent string) (int, error) {
	if err := checkRel(rel); err != nil {
		return -1, err
	}
	parent = strings.TrimSuffix(parent, "/")
	if parent == "" {
		parent = "."
		fd, err := unix.Open(d.root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return -1, &fs.PathError{Op: "open", Path: d.root, Err: err}
		}
		return fd, nil
	}
	return d.open(parent, unix.O_PATH|unix.O_DIRECTORY, 0)
}

// Mkdir makes the directory rel (its parent must exist) with mode perm, set
// through the new directory's descriptor so the umask does not narrow it. An
// existing directory is left as it is; anything else there is tampering.
func (d Dir) Mkdir(rel string, perm uint32) error {
	parent, base := path.Split(rel)
	pfd, err := d.parent(rel, parent)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	made := true
	if err := unix.Mkdirat(pfd, base, 0o700); err != nil {
		if !errors.Is(err, unix.EEXIST) {
			return d.classify(rel, "mkdir", err)
		}
		made = false
	}
	fd, err := unix.Openat(pfd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return d.classify(rel, "open", err)
	}
	defer unix.Close(fd)
	if !made {
		return nil
	}
	if err := unix.Fchmod(fd, perm); err != nil {
		return &fs.PathError{Op: "chmod", Path: path.Join(d.root, rel), Err: err}
	}
	return nil
}

// Create creates rel, which must not exist, with mode perm and owner uid:gid
// (-1 keeps the plugin's), both set through the new file's descriptor, and
// returns it open for writing.
func (d Dir) Create(rel string, perm uint32, uid, gid int) (*os.File, error) {
	parent, base := path.Split(rel)
	pfd, err := d.parent(rel, parent)
	if err != nil {
		return nil, err
	}
	defer unix.Close(pfd)
	fd, err := unix.Openat(pfd, base, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		if errors.Is(err, unix.EEXIST) {
			return nil, d.tampered(rel, "exists before the plugin created it")
		}
		return nil, d.classify(rel, "create", err)
	}
	f := os.NewFile(uintptr(fd), path.Join(d.root, rel))
	err = nil
	if uid >= 0 || gid >= 0 {
		if cerr := unix.Fchown(fd, uid, gid); cerr != nil {
			err = &fs.PathError{Op: "chown", Path: f.Name(), Err: cerr}
		}
	}
	if err == nil {
		if cerr := unix.Fchmod(fd, perm); cerr != nil {
			err = &fs.PathError{Op: "chmod", Path: f.Name(), Err: cerr}
		}
	}
	if err != nil {
		f.Close()
		_ = unix.Unlinkat(pfd, base, 0)
		return nil, err
	}
	return f, nil
}

// CreateFile creates rel, which must not exist, holding data (see Create). On
// any failure it removes what it created.
func (d Dir) CreateFile(rel string, data []byte, perm uint32, uid, gid int) error {
	f, err := d.Create(rel, perm, uid, gid)
	if err != nil {
		return err
	}
	_, werr := f.Write(data)
	if err := errors.Join(werr, f.Close()); err != nil {
		_ = d.Remove(rel)
		return err
	}
	return nil
}

// Remove removes the name rel (never what a symlink there points to); a
// missing name is no error.
func (d Dir) Remove(rel string) error {
	parent, base := path.Split(rel)
	pfd, err := d.parent(rel, parent)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	defer unix.Close(pfd)
	if err := unix.Unlinkat(pfd, base, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return d.classify(rel, "remove", err)
	}
	return nil
}

func short(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}
