//go:build linux

package allocfs

import (
	"os"
	"path"
)

// The tests reach a Handle's single-name open and create as files; the
// plugin uses them through CopyFile only.

// Open is openRegular as a file.
func (h *Handle) Open(name string) (*os.File, error) {
	fd, err := h.openRegular(name)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), path.Join(h.d.root, h.relOf(name))), nil
}

// Create is create as a file.
func (h *Handle) Create(name string, perm uint32, uid, gid int) (*os.File, error) {
	fd, err := h.create(name, perm, uid, gid)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), path.Join(h.d.root, h.relOf(name))), nil
}

// readDir is Each kept whole.
func (h *Handle) readDir() ([]Entry, error) {
	var out []Entry
	err := h.Each(func(e Entry) error {
		out = append(out, e)
		return nil
	})
	return out, err
}
