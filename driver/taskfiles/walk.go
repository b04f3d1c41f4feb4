package taskfiles

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/agentkernel/agentkernel-pool/driver/allocfs"
)

// Walks. A sandbox's trees are the command's to shape: a few MiB on disk
// can hold a hundred nested directories of 240-character names, thousands
// of hard links to one file, millions of empty directories. A walk
// therefore keeps nothing per entry: it holds the directories on its way
// down open (allocfs.Handle), reads each one's names a batch at a time
// (Handle.Each) and descends as it meets a directory, so what it holds
// grows with the depth, which MaxDepth bounds, never with the entries; and
// it counts every name it meets, whatever it is (file, directory, symlink,
// hard link, special file, temporary name), and the bytes of its path,
// stopping with ErrLimit as soon as a bound is passed.

// MaxDepth bounds how many directories deep below a tree's root a walk
// descends. Deeper trees fail the copy with ErrLimit: real ones (a cloned
// repository, node_modules) stay well above it, and it bounds what a walk
// holds open (a few descriptors and one batch of names per level).
const MaxDepth = 32

// walker walks trees under a Sync's Limits and counts what it meets; one
// walker spans the trees of one pass, so the bounds are for the pass.
type walker struct {
	lim     Limits
	tree    string // the tree being walked, for messages
	entries int    // names met
	names   int64  // bytes of their paths
	bytes   int64  // bytes of the regular files the pass copies
	rel     []byte // path of the current entry, relative to its tree's root
}

func newWalker(lim Limits) *walker { return &walker{lim: lim} }

// enter counts the name met in the current directory and makes w.rel its
// path; leave(mark) makes w.rel the directory's again.
func (w *walker) enter(name string) (mark int, err error) {
	mark = len(w.rel)
	if mark > 0 {
		w.rel = append(w.rel, '/')
	}
	w.rel = append(w.rel, name...)
	w.entries++
	w.names += int64(len(w.rel))
	switch {
	case w.entries > w.lim.Entries:
		err = fmt.Errorf("%w: %s holds more than %d entries (files, directories, links and special files counted alike)", ErrLimit, w.tree, w.lim.Entries)
	case w.names > w.lim.NameBytes:
		err = fmt.Errorf("%w: the paths of the entries in %s are more than %d bytes together", ErrLimit, w.tree, w.lim.NameBytes)
	}
	return mark, err
}

func (w *walker) leave(mark int) { w.rel = w.rel[:mark] }

// copies counts n bytes of a regular file the pass copies.
func (w *walker) copies(n int64) error {
	if w.bytes += n; w.bytes > w.lim.Bytes {
		return fmt.Errorf("%w: %s holds more than %d bytes to copy", ErrLimit, w.tree, w.lim.Bytes)
	}
	return nil
}

// deeper is the error for a directory below MaxDepth.
func (w *walker) deeper() error {
	return fmt.Errorf("%w: %s nests directories more than %d deep", ErrLimit, w.tree, MaxDepth)
}

// visit is called for each entry of a walk with the directory it is in;
// it says whether to descend into a directory.
type visit func(dir *allocfs.Handle, e allocfs.Entry) (descend bool, err error)

// walk walks the tree whose root is rel in d, as w.tree. A missing root is
// an empty tree.
func (w *walker) walk(d allocfs.Dir, rel, tree string, fn visit) error {
	h, err := d.OpenHandle(rel)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer h.Close()
	w.tree, w.rel = tree, w.rel[:0]
	return w.walkIn(h, 0, fn)
}

// walkIn calls fn for every entry beneath h, depth levels below the tree's
// root, parents before children; it never descends into a symlink (Sub
// refuses one) and leaves the plugin's temporary names out, once counted.
func (w *walker) walkIn(h *allocfs.Handle, depth int, fn visit) error {
	return h.Each(func(e allocfs.Entry) error {
		mark, err := w.enter(e.Name)
		if err != nil {
			return err
		}
		defer w.leave(mark)
		if allocfs.IsTemp(e.Name) {
			return nil
		}
		descend, err := fn(h, e)
		if err != nil || !descend || !e.IsDir() {
			return err
		}
		if depth >= MaxDepth {
			return w.deeper()
		}
		sub, err := h.Sub(e.Name)
		if errors.Is(err, fs.ErrNotExist) {
			return nil // gone since the listing
		}
		if err != nil {
			return err
		}
		defer sub.Close()
		return w.walkIn(sub, depth+1, fn)
	})
}
