package allocfs

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path"
	"strconv"
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

// dirBatch is how many names a listing asks the kernel for at a time: a
// listing holds this many names (and the kernel's 8 KiB of them), however
// many the directory has.
const dirBatch = 128

// maxDirEntries bounds a listing kept whole (Dir.ReadDir: the run dirs of one
// sandbox, a handful). Walks over trees go through Handle.Each, which keeps
// nothing.
const maxDirEntries = 4096

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
// claims), in no particular order. More than maxDirEntries names are
// tampering: the listing is kept whole.
func (d Dir) ReadDir(rel string) ([]Entry, error) {
	f, err := d.OpenDir(rel)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Entry
	err = eachName(f, func(n string) error {
		if len(out) == maxDirEntries {
			return d.tampered(rel, "holds more than "+strconv.Itoa(maxDirEntries)+" names")
		}
		var st unix.Stat_t
		if err := unix.Fstatat(int(f.Fd()), n, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			if errors.Is(err, unix.ENOENT) {
				return nil // gone since the listing
			}
			return d.classify(path.Join(rel, n), "lstat", err)
		}
		out = append(out, entryOf(n, &st))
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// eachName calls fn for each name in the open directory f, read dirBatch at
// a time, until fn's first error.
func eachName(f *os.File, fn func(string) error) error {
	for {
		names, err := f.Readdirnames(dirBatch)
		for _, n := range names {
			if err := fn(n); err != nil {
				return err
			}
		}
		switch {
		case errors.Is(err, io.EOF) || err == nil && len(names) == 0:
			return nil
		case err != nil:
			return &fs.PathError{Op: "readdir", Path: f.Name(), Err: err}
		}
	}
}

// IsTemp reports whether a name is one of the plugin's temporary names.
func IsTemp(name string) bool { return strings.HasPrefix(name, TempPrefix) }

// TempPrefix starts the names the plugin writes a file under before renaming
// it into place.
const TempPrefix = ".agentkernel-tmp-"
