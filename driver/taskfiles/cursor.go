package taskfiles

import (
	"path"
	"strings"

	"github.com/agentkernel/agentkernel-pool/driver/allocfs"
)

// cursor keeps open, on one side of a copy, the directory of the entry being
// copied and the directories above it up to the tree's root: entries come
// parents before children, so each directory is opened once while the
// entries in it are copied, and at most maxDepth+1 are open at a time.
type cursor struct {
	d    allocfs.Dir
	root string
	dirs []string // tree-relative path of each open directory; dirs[0] is ""
	hs   []*allocfs.Handle
}

// at returns the open directory dir (tree-relative, "" for the root),
// opening what is missing from the deepest open directory above it down.
func (c *cursor) at(dir string) (*allocfs.Handle, error) {
	for n := len(c.dirs); n > 0 && !under(dir, c.dirs[n-1]); n-- {
		c.pop()
	}
	if len(c.hs) == 0 {
		h, err := c.d.OpenHandle(c.root)
		if err != nil {
			return nil, err
		}
		c.dirs, c.hs = append(c.dirs, ""), append(c.hs, h)
	}
	for {
		top := c.dirs[len(c.dirs)-1]
		if top == dir {
			return c.hs[len(c.hs)-1], nil
		}
		rest := dir
		if top != "" {
			rest = dir[len(top)+1:]
		}
		name, _, _ := strings.Cut(rest, "/")
		h, err := c.hs[len(c.hs)-1].Sub(name)
		if err != nil {
			return nil, err
		}
		next := name
		if top != "" {
			next = top + "/" + name
		}
		c.dirs, c.hs = append(c.dirs, next), append(c.hs, h)
	}
}

// under reports whether dir is anc or beneath it.
func under(dir, anc string) bool {
	return anc == "" || dir == anc || strings.HasPrefix(dir, anc) && dir[len(anc)] == '/'
}

func (c *cursor) pop() {
	n := len(c.hs) - 1
	c.hs[n].Close()
	c.dirs, c.hs = c.dirs[:n], c.hs[:n]
}

func (c *cursor) close() {
	for len(c.hs) > 0 {
		c.pop()
	}
}

// path is dir/name relative to the boundary's root.
func (c *cursor) path(dir, name string) string { return path.Join(c.root, dir, name) }
