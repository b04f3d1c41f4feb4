package taskfiles

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"syscall"

	"github.com/agentkernel/agentkernel-pool/driver/allocfs"
	"github.com/agentkernel/agentkernel-pool/internal/untrusted"
)

// Copying a tree across two boundaries: every name is listed and described
// through allocfs (no symlink followed), each directory on either side is
// opened once (an allocfs.Handle) and the names in it are reached relative
// to it, one component at a time. A file replacing one the other side may
// be reading lands under a temporary name renamed into place; the first copy
// into a sandbox, before its command starts, creates the final names
// directly.

// maxDepth bounds how deep a tree is walked.
const maxDepth = 128

// walk calls fn for every entry beneath root (rel relative to root), parents
// before children; it does not descend into symlinks. A missing root is an
// empty tree.
func walk(d allocfs.Dir, root string, fn func(string, allocfs.Entry) error) error {
	h, err := d.OpenHandle(root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer h.Close()
	return walkIn(h, root, "", 0, fn)
}

func walkIn(h *allocfs.Handle, root, rel string, depth int, fn func(string, allocfs.Entry) error) error {
	if depth > maxDepth {
		return fmt.Errorf("%s: nests deeper than %d directories", untrusted.Name(path.Join(root, rel)), maxDepth)
	}
	entries, err := h.ReadDir()
	if err != nil {
		return err
	}
	for _, e := range entries {
		if allocfs.IsTemp(e.Name) {
			continue
		}
		r := e.Name
		if rel != "" {
			r = rel + "/" + e.Name
		}
		if err := fn(r, e); err != nil {
			return err
		}
		if !e.IsDir() {
			continue
		}
		sub, err := h.Sub(e.Name)
		if errors.Is(err, fs.ErrNotExist) {
			continue // gone since the listing
		}
		if err != nil {
			return err
		}
		err = walkIn(sub, root, r, depth+1, fn)
		sub.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// item is one entry of a tree, rel to its root.
type item struct {
	rel string
	e   allocfs.Entry
}

// list lists every entry beneath root, parents before children.
func list(d allocfs.Dir, root string) ([]item, error) {
	var items []item
	err := walk(d, root, func(rel string, e allocfs.Entry) error {
		items = append(items, item{rel, e})
		return nil
	})
	return items, err
}

// copyTree copies the entries of fromRoot that want accepts to toRoot, owned
// by uid:gid, each file replacing what was there at once.
func (s *Sync) copyTree(from allocfs.Dir, fromRoot string, to allocfs.Dir, toRoot string, uid, gid int, want func(string, allocfs.Entry) bool) (Stats, error) {
	items, err := list(from, fromRoot)
	if err != nil {
		return Stats{}, err
	}
	return copyItems(from, fromRoot, to, toRoot, filter(items, want), uid, gid, false)
}

// filter keeps the items want accepts.
func filter(items []item, want func(string, allocfs.Entry) bool) []item {
	out := items[:0:0]
	for _, it := range items {
		if want(it.rel, it.e) {
			out = append(out, it)
		}
	}
	return out
}

// copier copies the entries of one tree to another, owned by uid:gid.
type copier struct {
	from, to *cursor
	uid, gid int
	// first: nothing in the destination reads it yet (the copy in, before
	// the command starts), so a file is created under its final name; a
	// name already there is replaced as in any other copy.
	first bool
	tmp   tempNames
}

// copyItems copies listed entries of fromRoot (parents before children) to
// toRoot, owned by uid:gid; first says no one reads toRoot yet.
func copyItems(from allocfs.Dir, fromRoot string, to allocfs.Dir, toRoot string, items []item, uid, gid int, first bool) (Stats, error) {
	c := copier{from: &cursor{d: from, root: fromRoot}, to: &cursor{d: to, root: toRoot}, uid: uid, gid: gid, first: first}
	defer c.from.close()
	defer c.to.close()
	var st Stats
	for _, it := range items {
		e := it.e
		dir, name := splitRel(it.rel)
		var err error
		switch {
		case e.IsDir():
			err = c.dir(dir, name, e.Perm())
		case e.IsRegular() && e.Links > 1 && !from.HardLinksOK():
			// A second name may be a file outside the sandbox's trees
			// (hard-linked under raw_exec): its content is not read.
			st.Skipped++
		case e.IsRegular():
			var n int64
			n, err = c.file(dir, name, e)
			st.Files++
			st.Bytes += n
		case e.IsSymlink():
			err = c.symlink(dir, name)
			st.Files++
		default:
			st.Skipped++
		}
		if err != nil {
			return st, err
		}
	}
	return st, nil
}

// splitRel splits a tree-relative path into its directory ("" for the
// tree's root) and its last name.
func splitRel(rel string) (string, string) {
	dir, name := path.Split(rel)
	if dir != "" {
		dir = dir[:len(dir)-1]
	}
	return dir, name
}

// dir makes dir/name a directory with perm, replacing anything else there; a
// directory there is kept as it is.
func (c *copier) dir(dir, name string, perm uint32) error {
	h, err := c.to.at(dir)
	if err != nil {
		return err
	}
	err = h.Mkdir(name, perm, c.uid, c.gid)
	if !errors.Is(err, fs.ErrExist) {
		return err
	}
	if err := c.to.d.RemoveAll(c.to.path(dir, name)); err != nil {
		return err
	}
	return h.Mkdir(name, perm, c.uid, c.gid)
}

// file copies a regular file's content, mode and mtime to dir/name, at most
// the size it had when listed (a file growing meanwhile is cut there).
func (c *copier) file(dir, name string, e allocfs.Entry) (int64, error) {
	src, err := c.from.at(dir)
	if err != nil {
		return 0, err
	}
	dst, err := c.to.at(dir)
	if err != nil {
		return 0, err
	}
	a := allocfs.Attrs{Perm: e.Perm(), UID: c.uid, GID: c.gid, MTime: e.MTime}
	var n int64
	err = c.place(dst, name, func(as string) error {
		var cerr error
		n, cerr = allocfs.CopyFile(src, name, dst, as, e.Size, a)
		return cerr
	})
	return n, err
}

// symlink makes dir/name a symlink holding what the source's holds.
func (c *copier) symlink(dir, name string) error {
	src, err := c.from.at(dir)
	if err != nil {
		return err
	}
	target, err := src.Readlink(name)
	if err != nil {
		return err
	}
	dst, err := c.to.at(dir)
	if err != nil {
		return err
	}
	return c.place(dst, name, func(as string) error { return dst.Symlink(target, as, c.uid, c.gid) })
}

// place makes name in h with write: on the first copy under name itself
// when nothing is there, else under a temporary name renamed over what is
// there (a directory there is removed first), so a reader sees the old file
// or the new one, never a part. write removes what it made when it fails.
func (c *copier) place(h *allocfs.Handle, name string, write func(as string) error) error {
	if c.first {
		if err := write(name); !errors.Is(err, fs.ErrExist) {
			return err
		}
	}
	tmp := c.tmp.next()
	if err := write(tmp); err != nil {
		return err
	}
	err := h.Rename(tmp, name)
	if errors.Is(err, syscall.EISDIR) {
		if err = c.to.d.RemoveAll(path.Join(h.Rel(), name)); err == nil {
			err = h.Rename(tmp, name)
		}
	}
	if err != nil {
		_ = h.Remove(tmp)
	}
	return err
}

// tempNames are the temporary names of one copy: one random part, then a
// count.
type tempNames struct {
	base string
	n    int
}

func (t *tempNames) next() string {
	if t.base == "" {
		var b [8]byte
		_, _ = rand.Read(b[:])
		t.base = allocfs.TempPrefix + hex.EncodeToString(b[:]) + "-"
	}
	t.n++
	return t.base + strconv.Itoa(t.n)
}
