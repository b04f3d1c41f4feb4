package taskfiles

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"

	"github.com/agentkernel/agentkernel-pool/driver/allocfs"
)

// Copying a tree across two boundaries: every name is listed and described
// through allocfs (no symlink followed), and every file lands under a
// temporary name renamed into place.

// maxDepth bounds how deep a tree is walked.
const maxDepth = 128

// walk calls fn for every entry beneath root (rel relative to root), parents
// before children; it does not descend into symlinks.
func walk(d allocfs.Dir, root, rel string, depth int, fn func(string, allocfs.Entry) error) error {
	if depth > maxDepth {
		return fmt.Errorf("%s: nests deeper than %d directories", path.Join(root, rel), maxDepth)
	}
	dir := root
	if rel != "" {
		dir = path.Join(root, rel)
	}
	entries, err := d.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range entries {
		if allocfs.IsTemp(e.Name) {
			continue
		}
		r := e.Name
		if rel != "" {
			r = path.Join(rel, e.Name)
		}
		if err := fn(r, e); err != nil {
			return err
		}
		if e.IsDir() {
			if err := walk(d, root, r, depth+1, fn); err != nil {
				return err
			}
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
	err := walk(d, root, "", 0, func(rel string, e allocfs.Entry) error {
		items = append(items, item{rel, e})
		return nil
	})
	return items, err
}

// copyTree copies the entries of fromRoot that want accepts to toRoot, owned
// by uid:gid.
func (s *Sync) copyTree(from allocfs.Dir, fromRoot string, to allocfs.Dir, toRoot string, uid, gid int, want func(string, allocfs.Entry) bool) (Stats, error) {
	items, err := list(from, fromRoot)
	if err != nil {
		return Stats{}, err
	}
	return copyItems(from, fromRoot, to, toRoot, filter(items, want), uid, gid)
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

// copyItems copies listed entries of fromRoot to toRoot, owned by uid:gid.
func copyItems(from allocfs.Dir, fromRoot string, to allocfs.Dir, toRoot string, items []item, uid, gid int) (Stats, error) {
	var st Stats
	for _, it := range items {
		rel, e := it.rel, it.e
		src, dst := path.Join(fromRoot, rel), path.Join(toRoot, rel)
		var err error
		switch {
		case e.IsDir():
			err = copyDir(to, dst, e.Perm(), uid, gid)
		case e.IsRegular() && e.Links > 1 && !from.HardLinksOK():
			// A second name may be a file outside the sandbox's trees
			// (hard-linked under raw_exec): its content is not read.
			st.Skipped++
		case e.IsRegular():
			var n int64
			n, err = copyFile(from, src, to, dst, e, uid, gid)
			st.Files++
			st.Bytes += n
		case e.IsSymlink():
			var target string
			if target, err = from.Readlink(src); err == nil {
				st.Files++
				err = place(to, dst, func(tmp string) error { return to.Symlink(target, tmp, uid, gid) })
			}
		default:
			st.Skipped++
		}
		if err != nil {
			return st, err
		}
	}
	return st, nil
}

// copyDir makes dst a directory with perm, replacing anything else there.
func copyDir(to allocfs.Dir, dst string, perm uint32, uid, gid int) error {
	cur, err := to.Lstat(dst)
	switch {
	case err == nil && cur.IsDir():
		return nil
	case err == nil:
		if err := to.RemoveAll(dst); err != nil {
			return err
		}
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	if err := to.Mkdir(dst, perm); err != nil {
		return err
	}
	if uid < 0 && gid < 0 {
		return nil
	}
	f, err := to.OpenDir(dst)
	if err != nil {
		return err
	}
	defer f.Close()
	return allocfs.Chown(f, uid, gid)
}

// copyFile copies a regular file's content, mode and mtime to dst, at most
// the size it had when listed (a file growing meanwhile is cut there).
func copyFile(from allocfs.Dir, src string, to allocfs.Dir, dst string, e allocfs.Entry, uid, gid int) (int64, error) {
	in, err := from.OpenFile(src)
	if err != nil {
		return 0, err
	}
	defer in.Close()
	var n int64
	err = place(to, dst, func(tmp string) error {
		out, err := to.Create(tmp, e.Perm(), uid, gid)
		if err != nil {
			return err
		}
		n, err = io.Copy(out, io.LimitReader(in, e.Size))
		if err == nil {
			err = allocfs.SetTimes(out, e.MTime)
		}
		return errors.Join(err, out.Close())
	})
	return n, err
}

// place makes dst through a temporary name beside it, then renames it into
// place, replacing what was there (a directory there is removed first).
func place(to allocfs.Dir, dst string, make func(tmp string) error) error {
	var b [8]byte
	_, _ = rand.Read(b[:])
	tmp := path.Join(path.Dir(dst), allocfs.TempPrefix+hex.EncodeToString(b[:]))
	if err := make(tmp); err != nil {
		_ = to.Remove(tmp)
		return err
	}
	if cur, err := to.Lstat(dst); err == nil && cur.IsDir() {
		if err := to.RemoveAll(dst); err != nil {
			_ = to.Remove(tmp)
			return err
		}
	}
	if err := to.Rename(tmp, dst); err != nil {
		_ = to.Remove(tmp)
		return err
	}
	return nil
}
