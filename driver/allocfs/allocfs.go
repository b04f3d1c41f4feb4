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
// O_NOFOLLOW walk with openat where openat2 is missing) to an O_PATH handle,
// which opens nothing, and checks with fstat what it found before it opens
// anything for I/O (open.go: a device or FIFO the sandbox planted is never
// opened), reads only regular files and only as much as a record may hold,
// creates files exclusively, and changes modes and owners only through the
// descriptor it created. What it refuses is a *TamperedError, whose message
// names the sandbox and the file (quoted and cut: the sandbox chose the name)
// and never quotes what was there.
package allocfs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/agentkernel/agentkernel-pool/internal/untrusted"
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

// Error names the file quoted and cut (untrusted.Name): the sandbox chose
// its name, and the message reaches task events and logs.
func (e *TamperedError) Error() string {
	return fmt.Sprintf("sandbox %s tampered with %s: %s", short(e.Alloc), untrusted.Name(e.File), e.Why)
}

// Is makes errors.Is(err, ErrTampered) true.
func (e *TamperedError) Is(target error) bool { return target == ErrTampered }

// Dir is a sandbox allocation's directory on the host. Its root path is trusted
// (Nomad made it); nothing beneath it is.
type Dir struct {
	root  string
	alloc string
	links bool // regular files with more than one name are accepted
	// walk resolves paths by the O_NOFOLLOW component walk even where
	// openat2 is there, as on a kernel without it: the package's tests
	// run every operation both ways.
	walk bool
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

// checkRel accepts the paths the plugin builds itself: relative, clean, no "..".
func checkRel(rel string) error {
	if rel == "" || rel == "." || path.IsAbs(rel) || path.Clean(rel) != rel || rel == ".." ||
		strings.HasPrefix(rel, "../") || strings.Contains(rel, "/../") || strings.HasSuffix(rel, "/..") {
		return fmt.Errorf("allocfs: %s is not a clean relative path", untrusted.Name(rel))
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
	return &fs.PathError{Op: op, Path: d.pathOf(rel), Err: err}
}

// pathOf is rel's path on the host for an error: quoted and cut, since the
// sandbox chose the names in it.
func (d Dir) pathOf(rel string) string { return untrusted.Name(path.Join(d.root, rel)) }

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
	fd, _, err := d.resolve(parent, true)
	return fd, err
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
		return &fs.PathError{Op: "chmod", Path: d.pathOf(rel), Err: err}
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
	f := os.NewFile(uintptr(fd), d.pathOf(rel))
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
