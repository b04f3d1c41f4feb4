package allocfs

import (
	"errors"
	"io"
	"io/fs"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// Tree operations, for listing and removing whole directories: every name is
// looked at with fstatat(AT_SYMLINK_NOFOLLOW) in a parent opened beneath the
// root, a symlink is never followed. Copies work through Handles (handle.go,
// copy.go).

// Entry is one name in a directory, as lstat sees it.
type Entry struct {
	Name  string
	Mode  uint32 // st_mode: type and permission bits
	UID   int
	GID   int
	Size  int64
	MTime int64  // nanoseconds since the epoch
	Links uint64 // names the inode has
}

// IsDir, IsRegular and IsSymlink tell an entry's type.
func (e Entry) IsDir() bool     { return e.Mode&unix.S_IFMT == unix.S_IFDIR }
func (e Entry) IsRegular() bool { return e.Mode&unix.S_IFMT == unix.S_IFREG }
func (e Entry) IsSymlink() bool { return e.Mode&unix.S_IFMT == unix.S_IFLNK }

// Perm is the entry's permission bits with setuid, setgid and sticky.
func (e Entry) Perm() uint32 { return e.Mode & 0o7777 }

// maxDirEntries bounds one directory listing.
const maxDirEntries = 1 << 20

func entryOf(name string, st *unix.Stat_t) Entry {
	return Entry{Name: name, Mode: st.Mode, UID: int(st.Uid), GID: int(st.Gid), Size: st.Size, MTime: st.Mtim.Nano(), Links: uint64(st.Nlink)}
}

// Lstat describes rel itself (a symlink is not followed).
func (d Dir) Lstat(rel string) (Entry, error) {
	parent, base := path.Split(rel)
	pfd, err := d.parent(rel, parent)
	if err != nil {
		return Entry{}, err
	}
	defer unix.Close(pfd)
	var st unix.Stat_t
	if err := unix.Fstatat(pfd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return Entry{}, d.classify(rel, "lstat", err)
	}
	return entryOf(base, &st), nil
}

// ReadDir lists the directory rel, each name described by fstatat in the
// directory the boundary opened (not by the type the kernel's listing
// claims), in no particular order.
func (d Dir) ReadDir(rel string) ([]Entry, error) {
	f, err := d.OpenDir(rel)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(maxDirEntries + 1)
	if err != nil && len(names) == 0 && !errors.Is(err, io.EOF) {
		return nil, &fs.PathError{Op: "readdir", Path: d.pathOf(rel), Err: err}
	}
	if len(names) > maxDirEntries {
		return nil, d.tampered(rel, "holds more than a million names")
	}
	out := make([]Entry, 0, len(names))
	for _, n := range names {
		var st unix.Stat_t
		if err := unix.Fstatat(int(f.Fd()), n, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue // gone since the listing
			}
			return nil, d.classify(path.Join(rel, n), "lstat", err)
		}
		out = append(out, entryOf(n, &st))
	}
	return out, nil
}

// RemoveAll removes rel and, when it is a directory, everything beneath it,
// without following any symlink; a missing name is no error.
func (d Dir) RemoveAll(rel string) error {
	return d.removeAll(rel, 0)
}

// maxDepth bounds how deep tree operations go.
const maxDepth = 256

func (d Dir) removeAll(rel string, depth int) error {
	if depth > maxDepth {
		return d.tampered(rel, "nests more than 256 directories deep")
	}
	e, err := d.Lstat(rel)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if e.IsDir() {
		entries, err := d.ReadDir(rel)
		if err != nil {
			return err
		}
		for _, c := range entries {
			if err := d.removeAll(path.Join(rel, c.Name), depth+1); err != nil {
				return err
			}
		}
	}
	parent, base := path.Split(rel)
	pfd, err := d.parent(rel, parent)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	flags := 0
	if e.IsDir() {
		flags = unix.AT_REMOVEDIR
	}
	if err := unix.Unlinkat(pfd, base, flags); err != nil && !errors.Is(err, unix.ENOENT) {
		return d.classify(rel, "remove", err)
	}
	return nil
}

// IsTemp reports whether a name is one of the plugin's temporary names.
func IsTemp(name string) bool { return strings.HasPrefix(name, TempPrefix) }

// TempPrefix starts the names the plugin writes a file under before renaming
// it into place.
const TempPrefix = ".agentkernel-tmp-"
