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

// copyTree copies the entries of fromRoot that want accepts (all when nil)
// to toRoot, owned by uid:gid.
func (s *Sync) copyTree(from allocfs.Dir, fromRoot string, to allocfs.Dir, toRoot string, uid, gid int, want func(string, allocfs.Entry) bool) (Stats, error) {
	var st Stats
	err := walk(from, fromRoot, "", 0, func(rel string, e allocfs.Entry) error {
		if want != nil && !want(rel, e) {
			return nil // a directory's entries are still walked
		}
		src, dst := path.Join(fromRoot, rel), path.Join(toRoot, rel)
		switch {
		case e.IsDir():
			return copyDir(to, dst, e.Perm(), uid, gid)
		case e.IsRegular() && e.Links > 1 && !from.HardLinksOK():
			// A second name may be a file outside the sandbox's trees
			// (hard-linked under raw_exec): its content is not read.
			st.Skipped++
			return nil
		case e.IsRegular():
			n, err := copyFile(from, src, to, dst, e, uid, gid)
			st.Files++
			st.Bytes += n
			return err
		case e.IsSymlink():
			target, err := from.Readlink(src)
			if err != nil {
				return err
			}
			st.Files++
			return place(to, dst, func(tmp string) error { return to.Symlink(target, tmp, uid, gid) })
		default:
			st.Skipped++
			return nil
		}
	})
	return st, err
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
