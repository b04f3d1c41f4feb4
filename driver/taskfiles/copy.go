package taskfiles

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io/fs"
	"strconv"
	"syscall"

	"github.com/agentkernel/agentkernel-pool/driver/allocfs"
)

// Copying a tree across two boundaries: the source is walked as any walk
// is (walk.go: counted, bounded, nothing kept per entry), and each directory
// of the destination is opened once, when the first entry in it is copied,
// and held while the walk is beneath it; names are reached relative to the
// held directories, one component at a time, never by a path. A file
// replacing one the other side may be reading lands under a temporary name
// renamed into place; the first copy into a sandbox, before its command
// starts, creates the final names directly.

// copier copies the entries of one tree to another.
type copier struct {
	w     *walker
	own   owner
	links bool // the source's regular files with a second name are copied (the task's side)
	// first: nothing in the destination reads it yet (the copy in, before
	// the command starts), so a file is created under its final name; a
	// name already there is replaced as in any other copy.
	first bool
	// want says whether an entry is copied; a directory not wanted is still
	// walked, and made when an entry beneath it is copied.
	want func(c *copier, dst *dest, e allocfs.Entry) (bool, error)
	// done, when set, is told each entry made, in its directory.
	done func(c *copier, dir *allocfs.Handle, name string) error
	tmp  tempNames
	st   Stats
}

// dest is a directory of the destination: opened, or made and opened, when
// the first entry in it is copied; looked for (peek) without making it.
type dest struct {
	up      *dest // nil for the tree's root, whose h is open from the start
	rootErr error // for the root: why it could not be opened
	name    string
	perm    uint32 // the source directory's, for making it
	h       *allocfs.Handle
	missing bool // looked for and not there
}

func (d *dest) close() {
	if d.h != nil {
		d.h.Close()
		d.h = nil
	}
}

// copyTree copies the tree at fromRoot in from to toRoot in to, as tree. A
// missing source is an empty tree; a missing destination fails the copy of
// the first entry that is to be copied.
func (c *copier) copyTree(from allocfs.Dir, fromRoot string, to allocfs.Dir, toRoot, tree string) error {
	src, err := from.OpenHandle(fromRoot)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer src.Close()
	h, err := to.OpenHandle(toRoot)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	root := &dest{h: h, rootErr: err, missing: err != nil}
	defer root.close()
	c.w.tree, c.w.rel = tree, c.w.rel[:0]
	return c.dir(src, root, 0)
}

// dir copies the entries of src, depth levels below the tree's root, into
// dst.
func (c *copier) dir(src *allocfs.Handle, dst *dest, depth int) error {
	return src.Each(func(e allocfs.Entry) error {
		mark, err := c.w.enter(e.Name)
		if err != nil {
			return err
		}
		defer c.w.leave(mark)
		if allocfs.IsTemp(e.Name) {
			return nil
		}
		want, err := c.want(c, dst, e)
		if err != nil {
			return err
		}
		if !e.IsDir() {
			if !want {
				return nil
			}
			return c.leaf(src, dst, e)
		}
		if depth >= MaxDepth {
			return c.w.deeper()
		}
		sub := &dest{up: dst, name: e.Name, perm: e.Perm()}
		defer sub.close()
		if want {
			if _, err := c.open(sub); err != nil {
				return err
			}
			if err := c.made(dst.h, e.Name); err != nil {
				return err
			}
		}
		s, err := src.Sub(e.Name)
		if errors.Is(err, fs.ErrNotExist) {
			return nil // gone since the listing
		}
		if err != nil {
			return err
		}
		defer s.Close()
		return c.dir(s, sub, depth+1)
	})
}

// leaf copies a file or symlink into dst; a special file, and a regular
// file with a second name where those are not read, are counted skipped.
func (c *copier) leaf(src *allocfs.Handle, dst *dest, e allocfs.Entry) error {
	switch {
	case e.IsRegular() && e.Links > 1 && !c.links:
		// A second name may be a file outside the sandbox's trees
		// (hard-linked under raw_exec): its content is not read.
		c.st.Skipped++
		return nil
	case e.IsRegular():
		if err := c.w.copies(e.Size); err != nil {
			return err
		}
		h, err := c.open(dst)
		if err != nil {
			return err
		}
		n, err := c.file(src, h, e)
		if err != nil {
			return err
		}
		c.st.Files++
		c.st.Bytes += n
		return c.made(h, e.Name)
	case e.IsSymlink():
		h, err := c.open(dst)
		if err != nil {
			return err
		}
		if err := c.symlink(src, h, e.Name); err != nil {
			return err
		}
		c.st.Files++
		return c.made(h, e.Name)
	default:
		// FIFOs, sockets, devices: never made on the other side.
		c.st.Skipped++
		return nil
	}
}

func (c *copier) made(dir *allocfs.Handle, name string) error {
	if c.done == nil {
		return nil
	}
	return c.done(c, dir, name)
}

// open returns the directory d, making what is missing of it and above it
// (with the source directory's mode, as c.own allows); anything but a
// directory in its place is removed first.
func (c *copier) open(d *dest) (*allocfs.Handle, error) {
	if d.h != nil || d.up == nil {
		return d.h, d.rootErr
	}
	up, err := c.open(d.up)
	if err != nil {
		return nil, err
	}
	err = up.Mkdir(d.name, c.own.perm(d.perm), c.own.uid, c.own.gid)
	if errors.Is(err, fs.ErrExist) {
		if err = up.RemoveAll(d.name); err == nil {
			err = up.Mkdir(d.name, c.own.perm(d.perm), c.own.uid, c.own.gid)
		}
	}
	if err != nil {
		return nil, err
	}
	if d.h, err = up.Sub(d.name); err != nil {
		return nil, err
	}
	d.missing = false
	return d.h, nil
}

// peek returns the directory d if it is there, nil if it is not; nothing
// is made.
func (c *copier) peek(d *dest) (*allocfs.Handle, error) {
	if d.h != nil || d.missing {
		return d.h, nil
	}
	up, err := c.peek(d.up)
	if err != nil || up == nil {
		d.missing = err == nil
		return nil, err
	}
	h, err := up.Sub(d.name)
	if errors.Is(err, fs.ErrNotExist) {
		d.missing = true
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	d.h = h
	return h, nil
}

// file copies a regular file's content, mode and mtime to name in dst, at
// most the size it had when listed (a file growing meanwhile is cut there).
func (c *copier) file(src, dst *allocfs.Handle, e allocfs.Entry) (int64, error) {
	a := allocfs.Attrs{Perm: c.own.perm(e.Perm()), UID: c.own.uid, GID: c.own.gid, MTime: e.MTime}
	var n int64
	err := c.place(dst, e.Name, func(as string) error {
		var cerr error
		n, cerr = allocfs.CopyFile(src, e.Name, dst, as, e.Size, a)
		return cerr
	})
	return n, err
}

// symlink makes name in dst a symlink holding what the source's holds.
func (c *copier) symlink(src, dst *allocfs.Handle, name string) error {
	target, err := src.Readlink(name)
	if err != nil {
		return err
	}
	return c.place(dst, name, func(as string) error { return dst.Symlink(target, as, c.own.uid, c.own.gid) })
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
		if err = h.RemoveAll(name); err == nil {
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
