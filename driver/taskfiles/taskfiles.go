// Package taskfiles makes a sandbox task drop-in: what Nomad prepared in the
// task's own dirs (local/, with templates, artifacts and the dispatch payload;
// secrets/, with templates and identity tokens; the group's alloc/data) is
// copied into the claimed sandbox, at the same relative places, before the
// command starts; changes Nomad makes there while it runs (re-rendered
// templates) follow; and what the command created, changed or deleted in
// local/ and alloc/data is copied back into the task's dirs before its exit is
// reported, where nomad alloc fs and poststop tasks find it.
//
// Both sides are hostile input: the task's dirs hold what a job author
// shipped (an artifact can be any tarball), the sandbox's what an untrusted
// command wrote. Both are reached only through allocfs boundaries, so no
// symlink is ever followed on either side (a symlink is carried as a
// symlink), no special file is copied, and nothing outside the two trees is
// read or written. Each directory is opened once on either side and the
// names in it are reached relative to it (allocfs.Handle). The copy in,
// before the command starts, creates each file under its own name (nothing
// reads the sandbox's trees yet; a name already there is replaced as below).
// A refresh or a write-back writes a file under a temporary name and renames
// it into place: a reader sees the old version or the new one, never a part.
// Every walk is bounded as it goes, in entries, path bytes, depth and bytes
// copied (walk.go), and holds what grows with the depth of a tree, never
// with its entries. A write-back that would exceed a bound writes nothing;
// what it makes on the host is never setuid, setgid, sticky, special or
// root-owned (owner.go).
package taskfiles

import (
	"errors"
	"fmt"
	"path"
	"sync"

	"github.com/agentkernel/agentkernel-pool/driver/allocfs"
)

// Tree is one directory both sides have: relative to the task's alloc dir and
// to the sandbox's.
type Tree struct {
	Name    string // how messages name it: "local", "secrets", "alloc/data"
	Task    string
	Sandbox string
	Back    bool // what the command leaves there is copied back
	Live    bool // Nomad changes it while the task runs (templates): Refresh copies it
}

// Trees are the dirs a task sees in its sandbox: its local/ and secrets/ (the
// sandbox task's own, task names differing) and the group's alloc/data.
func Trees(task, sandboxTask string) []Tree {
	return []Tree{
		{Name: "local", Task: path.Join(task, "local"), Sandbox: path.Join(sandboxTask, "local"), Back: true, Live: true},
		{Name: "secrets", Task: path.Join(task, "secrets"), Sandbox: path.Join(sandboxTask, "secrets"), Live: true},
		{Name: "alloc/data", Task: "alloc/data", Sandbox: "alloc/data", Back: true},
	}
}

// Limits bound what one copy (In, Refresh, Out) walks and copies.
type Limits struct {
	Bytes int64 // bytes of regular files copied
	// Entries counts every name a walk meets, whatever it is: files,
	// directories, symlinks, hard links, special files.
	Entries int
	// NameBytes counts the bytes of those names' paths, relative to their
	// tree's root.
	NameBytes int64
}

// DefaultLimits bound a copy unless the driver says otherwise.
var DefaultLimits = Limits{Bytes: 2 << 30, Entries: 100_000, NameBytes: 32 << 20}

// ErrLimit is returned (wrapped, naming the bound) when a copy would exceed
// its Limits or MaxDepth; a write-back then wrote nothing, unless the error
// also wraps ErrPartial.
var ErrLimit = errors.New("task files limit exceeded")

// ErrPartial is wrapped in a write-back's error when it failed part way,
// after it had begun to write: what it wrote before the failure stays. A
// tree within its bounds when counted can grow past them while it is copied
// (a process the command left behind writes on).
var ErrPartial = errors.New("stopped part way")

// Stats say what a sync did.
type Stats struct {
	Files   int   // regular files and symlinks written
	Bytes   int64 // bytes of regular files written
	Removed int   // names removed
	Skipped int   // special files (FIFOs, devices, sockets), and the sandbox's hard-linked files, not copied
}

func (s *Stats) add(o Stats) {
	s.Files += o.Files
	s.Bytes += o.Bytes
	s.Removed += o.Removed
	s.Skipped += o.Skipped
}

// Sync copies a task's trees between its alloc dir and its sandbox's.
type Sync struct {
	Task    allocfs.Dir // the task's alloc dir (hard links accepted)
	Sandbox allocfs.Dir
	Trees   []Tree
	// UID and GID are the sandbox task's user (-1 unknown): they own what
	// is copied into the sandbox, and, unless root, what the write-back
	// makes on the host (else NobodyUID:NobodyGID).
	UID, GID int
	Limits   Limits
	// StatePath keeps what the sandbox's trees held after the copy in, and
	// what refreshes copied since (in the task's private dir), so a
	// write-back after a plugin restart still tells what the command changed.
	StatePath string

	mu    sync.Mutex
	state map[string]treeState // per tree: the sandbox side after our copies
}

// In copies the task's trees into the sandbox (the task's files win over the
// sandbox's own), then records the sandbox's trees. Call it before the
// command starts.
func (s *Sync) In() (Stats, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// The same bounds as a write-back: a task whose trees are larger fails
	// to start with the reason, instead of copying without end. A counting
	// pass first, so that nothing is copied then.
	lim := s.limits()
	count := newWalker(lim)
	for _, t := range s.Trees {
		err := count.walk(s.Task, t.Task, t.Name, func(_ *allocfs.Handle, e allocfs.Entry) (bool, error) {
			if e.IsRegular() {
				return true, count.copies(e.Size)
			}
			return true, nil
		})
		if err != nil {
			return Stats{}, fmt.Errorf("read the task's %s: %w", t.Name, err)
		}
	}
	c := &copier{w: newWalker(lim), own: sandboxOwner(s.UID, s.GID), links: true, first: true,
		want: func(*copier, *dest, allocfs.Entry) (bool, error) { return true, nil }}
	for _, t := range s.Trees {
		if err := s.ensureRoot(t); err != nil {
			return c.st, err
		}
		if err := c.copyTree(s.Task, t.Task, s.Sandbox, t.Sandbox, t.Name); err != nil {
			return c.st, fmt.Errorf("copy %s into the sandbox: %w", t.Name, err)
		}
	}
	// What the sandbox's trees hold now, the template's files with the
	// task's: a write-back copies what differs from it.
	rec := newWalker(lim)
	state := map[string]treeState{}
	for _, t := range s.Trees {
		ts := treeState{}
		err := rec.walk(s.Sandbox, t.Sandbox, t.Name, func(_ *allocfs.Handle, e allocfs.Entry) (bool, error) {
			ts[keyOf(rec.rel)] = stateOf(e)
			return true, nil
		})
		if err != nil {
			return c.st, fmt.Errorf("record %s in the sandbox: %w", t.Name, err)
		}
		state[t.Name] = ts
	}
	s.state = state
	return c.st, s.save()
}

// Refresh copies what changed in the task's trees since the last copy into
// the sandbox (a template Nomad rendered again), adding and replacing, never
// removing, and records what it copied. Call it before a signal reaches the
// command, and when the task's files change. It walks the task's trees
// only: what the command does elsewhere in the sandbox's is not looked at.
func (s *Sync) Refresh() (Stats, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.loadLocked(); err != nil {
		return Stats{}, err
	}
	lim := s.limits()
	own := sandboxOwner(s.UID, s.GID)
	c := &copier{w: newWalker(lim), own: own, links: true,
		want: func(c *copier, dst *dest, e allocfs.Entry) (bool, error) {
			h, err := c.peek(dst)
			if err != nil || h == nil {
				return err == nil, err
			}
			cur, err := h.Lstat(e.Name)
			return err != nil || !e.IsDir() && (cur.Size != e.Size || cur.MTime != e.MTime || cur.Mode != own.mode(e.Mode)), nil
		}}
	var err error
	for _, t := range s.Trees {
		if !t.Live {
			continue
		}
		ts := s.state[t.Name]
		if ts == nil {
			ts = treeState{}
			s.state[t.Name] = ts
		}
		c.done = func(c *copier, dir *allocfs.Handle, name string) error {
			e, err := dir.Lstat(name)
			if err != nil {
				return err
			}
			k := keyOf(c.w.rel)
			if _, ok := ts[k]; !ok && s.stateEntries() >= lim.Entries {
				return fmt.Errorf("%w: the sandbox's trees would hold more than %d entries", ErrLimit, lim.Entries)
			}
			ts[k] = stateOf(e)
			return nil
		}
		if err = c.copyTree(s.Task, t.Task, s.Sandbox, t.Sandbox, t.Name); err != nil {
			err = fmt.Errorf("refresh %s in the sandbox: %w", t.Name, err)
			break
		}
	}
	// What was copied is recorded, whether or not all of it was.
	return c.st, errors.Join(err, s.save())
}

// Out copies what the command created or changed in the trees copied back
// into the task's, and removes there what it deleted. When the changes exceed
// the Limits it writes nothing and returns an error wrapping ErrLimit; an
// error once it has begun to write wraps ErrPartial, with the Stats of what
// it wrote.
func (s *Sync) Out() (Stats, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.loadLocked(); err != nil {
		return Stats{}, err
	}
	lim := s.limits()
	changed := func(ts treeState, rel []byte, e allocfs.Entry) bool {
		old, ok := ts[keyOf(rel)]
		return !ok || old != stateOf(e)
	}
	// A counting pass first, so that a write-back over its bounds writes
	// nothing; it also notes which recorded entries are still there.
	count := newWalker(lim)
	seen := map[string]map[stateKey]bool{}
	for _, t := range s.Trees {
		if !t.Back {
			continue
		}
		ts, here := s.state[t.Name], map[stateKey]bool{}
		seen[t.Name] = here
		err := count.walk(s.Sandbox, t.Sandbox, t.Name, func(_ *allocfs.Handle, e allocfs.Entry) (bool, error) {
			k := keyOf(count.rel)
			if old, ok := ts[k]; ok {
				here[k] = true
				if old == stateOf(e) {
					return true, nil
				}
			}
			if e.IsRegular() && e.Links < 2 {
				return true, count.copies(e.Size)
			}
			return true, nil
		})
		if err != nil {
			return Stats{}, fmt.Errorf("read %s in the sandbox: %w", t.Name, err)
		}
	}
	// The copy enforces the bounds again as it goes: the sandbox may have
	// changed since the count (a process the command left behind).
	own, w := hostOwner(s.UID, s.GID), newWalker(lim)
	var total Stats
	for _, t := range s.Trees {
		if !t.Back {
			continue
		}
		ts := s.state[t.Name]
		c := &copier{w: w, own: own,
			want: func(c *copier, _ *dest, e allocfs.Entry) (bool, error) { return changed(ts, c.w.rel, e), nil }}
		err := c.copyTree(s.Sandbox, t.Sandbox, s.Task, t.Task, t.Name)
		total.add(c.st)
		if err != nil {
			return total, fmt.Errorf("copy %s back from the sandbox, %w: %w", t.Name, ErrPartial, err)
		}
		n, err := s.removeDeleted(t, seen[t.Name], lim)
		total.Removed += n
		if err != nil {
			return total, fmt.Errorf("remove from %s what the command deleted, %w: %w", t.Name, ErrPartial, err)
		}
	}
	return total, nil
}

func (s *Sync) limits() Limits {
	l := s.Limits
	if l.Bytes <= 0 {
		l.Bytes = DefaultLimits.Bytes
	}
	if l.Entries <= 0 {
		l.Entries = DefaultLimits.Entries
	}
	if l.NameBytes <= 0 {
		l.NameBytes = DefaultLimits.NameBytes
	}
	return l
}

// ensureRoot makes a tree's dir on both sides when it is missing.
func (s *Sync) ensureRoot(t Tree) error {
	for _, side := range []struct {
		d   allocfs.Dir
		rel string
	}{{s.Task, t.Task}, {s.Sandbox, t.Sandbox}} {
		// Each missing dir on the way, as Nomad makes them (0777 for
		// local/ and alloc/data, which any task user writes).
		for i := range len(side.rel) + 1 {
			if i < len(side.rel) && side.rel[i] != '/' {
				continue
			}
			dir := side.rel[:i]
			if ok, err := side.d.Exists(dir); err != nil {
				return fmt.Errorf("%s: %w", t.Name, err)
			} else if !ok {
				if err := side.d.Mkdir(dir, 0o777); err != nil {
					return fmt.Errorf("make %s: %w", t.Name, err)
				}
			}
		}
	}
	return nil
}

// removeDeleted removes from the task's side of t what was in the sandbox
// after the copy in and is not in it now (recorded, not seen by the count).
// The paths are not kept (the state holds their hashes): the task's side is
// walked, as bounded as any walk, when something was deleted.
func (s *Sync) removeDeleted(t Tree, seen map[stateKey]bool, lim Limits) (int, error) {
	ts := s.state[t.Name]
	if len(ts) == len(seen) {
		return 0, nil
	}
	n := 0
	w := newWalker(lim)
	err := w.walk(s.Task, t.Task, t.Name, func(dir *allocfs.Handle, e allocfs.Entry) (bool, error) {
		k := keyOf(w.rel)
		if _, ok := ts[k]; !ok || seen[k] {
			return true, nil
		}
		if err := dir.RemoveAll(e.Name); err != nil {
			return false, err
		}
		n++
		return false, nil
	})
	return n, err
}
