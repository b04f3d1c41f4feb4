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

// Removing trees. A sandbox can keep adding names to a directory while the
// plugin removes it, and nest directories as deep as the kernel lets it: a
// removal holds the directories on its way down open (one Handle each) and
// lists each dirBatch names at a time, so what it holds grows with its depth
// only, and it ends with an error past maxRemoveDepth levels or maxRemoved
// names instead of running on.
const (
	maxRemoveDepth = 64
	maxRemoved     = 1 << 20
)

// RemoveAll removes rel and, when it is a directory, everything beneath it,
// without following any symlink; a missing name is no error.
func (d Dir) RemoveAll(rel string) error {
	if err := checkRel(rel); err != nil {
		return err
	}
	parent, base := path.Split(rel)
	h, err := d.OpenHandle(strings.TrimSuffix(parent, "/"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer h.Close()
	return h.RemoveAll(base)
}

// RemoveAll removes the name in h and, when it is a directory, everything
// beneath it, as Dir.RemoveAll does.
func (h *Handle) RemoveAll(name string) error {
	if err := h.checkName(name); err != nil {
		return err
	}
	n := 0
	return h.removeAll(name, 0, &n)
}

func (h *Handle) removeAll(name string, depth int, n *int) error {
	if *n++; *n > maxRemoved {
		return h.d.tampered(h.relOf(name), "is in a tree of more than "+strconv.Itoa(maxRemoved)+" names to remove")
	}
	e, err := h.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	flags := 0
	if e.IsDir() {
		if depth >= maxRemoveDepth {
			return h.d.tampered(h.relOf(name), "nests more than "+strconv.Itoa(maxRemoveDepth)+" directories deep")
		}
		sub, err := h.Sub(name)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		err = sub.empty(depth+1, n)
		sub.Close()
		if err != nil {
			return err
		}
		flags = unix.AT_REMOVEDIR
	}
	if err := unix.Unlinkat(h.fd, name, flags); err != nil && !errors.Is(err, unix.ENOENT) {
		return h.fail(name, "remove", err)
	}
	return nil
}

// empty removes everything in the directory h. Removing names while reading
// a listing may make it skip others, so each batch is read from a new
// descriptor, until one comes back short.
func (h *Handle) empty(depth int, n *int) error {
	for {
		fd, err := openatRetry(h.fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return &fs.PathError{Op: "open", Path: path.Join(h.d.root, h.rel), Err: err}
		}
		f := os.NewFile(uintptr(fd), path.Join(h.d.root, h.rel))
		names, rerr := f.Readdirnames(dirBatch)
		f.Close()
		for _, name := range names {
			if err := h.removeAll(name, depth, n); err != nil {
				return err
			}
		}
		if len(names) < dirBatch {
			if rerr != nil && !errors.Is(rerr, io.EOF) {
				return &fs.PathError{Op: "readdir", Path: path.Join(h.d.root, h.rel), Err: rerr}
			}
			return nil
		}
	}
}
