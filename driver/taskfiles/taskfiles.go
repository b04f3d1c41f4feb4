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
// The write-back is bounded in bytes and files, and when it would exceed a bound
// it writes nothing.
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

// Limits bound what a write-back copies.
type Limits struct {
	Bytes int64
	Files int
}

// DefaultLimits bound a write-back unless the driver says otherwise.
var DefaultLimits = Limits{Bytes: 2 << 30, Files: 100_000}

// ErrLimit is returned (wrapped, naming the bound) when a write-back would
// exceed its Limits; nothing was written then.
var ErrLimit = errors.New("write-back limit exceeded")

// Stats say what a sync did.
type Stats struct {
	Files   int   // regular files and symlinks written
	Bytes   int64 // bytes of regular files written
	Removed int   // names removed
	Skipped int   // special files (FIFOs, devices, sockets) not copied
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
	// UID and GID own what is copied into the sandbox: the sandbox task's user.
	UID, GID int
	Limits   Limits
	// StatePath keeps the sandbox's trees as they were after the last copy in
	// (in the task's private dir), so a write-back after a plugin restart
	// still tells what the command changed.
	StatePath string

	mu    sync.Mutex
	state map[string]entryState // "<tree>/<rel>" -> sandbox side after our copies
}

// entryState is what a write-back compares to tell a change.
type entryState struct {
	Mode  uint32 `json:"m"`
	Size  int64  `json:"s"`
	MTime int64  `json:"t"`
}

func stateOf(e allocfs.Entry) entryState {
	return entryState{Mode: e.Mode, Size: e.Size, MTime: e.MTime}
}

// In copies the task's trees into the sandbox (the task's files win over the
// sandbox's own), then records the sandbox's trees. Call it before the
// command starts.
func (s *Sync) In() (Stats, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	// The same bounds as a write-back: a task whose trees are larger fails
	// to start with the reason, instead of copying without end. Each tree is
	// listed once, for the count and the copy.
	lim := s.limits()
	var need Stats
	lists := make([][]item, len(s.Trees))
	for i, t := range s.Trees {
		items, err := list(s.Task, t.Task)
		if err != nil {
			return Stats{}, fmt.Errorf("read %s: %w", t.Name, err)
		}
		lists[i] = items
		for _, it := range items {
			if it.e.IsRegular() || it.e.IsSymlink() {
				need.Files++
				need.Bytes += it.e.Size
			}
		}
	}
	if need.Bytes > lim.Bytes || need.Files > lim.Files {
		return Stats{}, fmt.Errorf("%w: the task's files are %d bytes in %d files, more than %d bytes or %d files",
			ErrLimit, need.Bytes, need.Files, lim.Bytes, lim.Files)
	}
	var total Stats
	for i, t := range s.Trees {
		if err := s.ensureRoot(t); err != nil {
			return total, err
		}
		st, err := copyItems(s.Task, t.Task, s.Sandbox, t.Sandbox, lists[i], s.UID, s.GID, true)
		total.add(st)
		if err != nil {
			return total, fmt.Errorf("copy %s into the sandbox: %w", t.Name, err)
		}
	}
	s.state = map[string]entryState{}
	for _, t := range s.Trees {
		if err := s.record(t); err != nil {
			return total, err
		}
	}
	return total, s.save()
}

// Refresh copies what changed in the task's trees since the last copy into
// the sandbox (a template Nomad rendered again), adding and replacing, never
// removing. Call it before a signal reaches the command, and when the task's
// files change.
func (s *Sync) Refresh() (Stats, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.loadLocked(); err != nil {
		return Stats{}, err
	}
	var total Stats
	for _, t := range s.Trees {
		if !t.Live {
			continue
		}
		st, err := s.copyTree(s.Task, t.Task, s.Sandbox, t.Sandbox, s.UID, s.GID, func(rel string, e allocfs.Entry) bool {
			cur, err := s.Sandbox.Lstat(path.Join(t.Sandbox, rel))
			return err != nil || !e.IsDir() && (cur.Size != e.Size || cur.MTime != e.MTime || cur.Mode != e.Mode)
		})
		total.add(st)
		if err != nil {
			return total, fmt.Errorf("refresh %s in the sandbox: %w", t.Name, err)
		}
		if err := s.record(t); err != nil {
			return total, err
		}
	}
	return total, s.save()
}

// Out copies what the command created or changed in the trees copied back
// into the task's, and removes there what it deleted. When the changes exceed
// the Limits it writes nothing and returns an error wrapping ErrLimit.
func (s *Sync) Out() (Stats, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.loadLocked(); err != nil {
		return Stats{}, err
	}
	changed := func(t Tree) func(string, allocfs.Entry) bool {
		return func(rel string, e allocfs.Entry) bool {
			old, ok := s.state[t.Name+"/"+rel]
			return !ok || old != stateOf(e)
		}
	}
	// First list and count, so that a write-back over its bounds writes
	// nothing; the copy then works from the same lists.
	var need Stats
	now := map[string]bool{} // "<tree>/<rel>" in the sandbox now
	lists := make([][]item, len(s.Trees))
	for i, t := range s.Trees {
		if !t.Back {
			continue
		}
		items, err := list(s.Sandbox, t.Sandbox)
		if err != nil {
			return Stats{}, fmt.Errorf("read %s in the sandbox: %w", t.Name, err)
		}
		for _, it := range items {
			now[t.Name+"/"+it.rel] = true
		}
		lists[i] = filter(items, changed(t))
		for _, it := range lists[i] {
			switch {
			case it.e.IsRegular() && it.e.Links < 2:
				need.Files++
				need.Bytes += it.e.Size
			case it.e.IsSymlink():
				need.Files++
			}
		}
	}
	lim := s.limits()
	if need.Bytes > lim.Bytes {
		return Stats{}, fmt.Errorf("%w: the command left %d bytes to copy back, more than %d", ErrLimit, need.Bytes, lim.Bytes)
	}
	if need.Files > lim.Files {
		return Stats{}, fmt.Errorf("%w: the command left %d files to copy back, more than %d", ErrLimit, need.Files, lim.Files)
	}
	var total Stats
	for i, t := range s.Trees {
		if !t.Back {
			continue
		}
		st, err := copyItems(s.Sandbox, t.Sandbox, s.Task, t.Task, lists[i], -1, -1, false)
		total.add(st)
		if err != nil {
			return total, fmt.Errorf("copy %s back from the sandbox: %w", t.Name, err)
		}
		n, err := s.removeDeleted(t, now)
		total.Removed += n
		if err != nil {
			return total, fmt.Errorf("remove from %s what the command deleted: %w", t.Name, err)
		}
	}
	return total, nil
}

func (s *Sync) limits() Limits {
	l := s.Limits
	if l.Bytes <= 0 {
		l.Bytes = DefaultLimits.Bytes
	}
	if l.Files <= 0 {
		l.Files = DefaultLimits.Files
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

// record notes every entry of the sandbox side of t as it is now.
func (s *Sync) record(t Tree) error {
	for k := range s.state {
		if len(k) > len(t.Name) && k[:len(t.Name)+1] == t.Name+"/" {
			delete(s.state, k)
		}
	}
	return walk(s.Sandbox, t.Sandbox, func(rel string, e allocfs.Entry) error {
		s.state[t.Name+"/"+rel] = stateOf(e)
		return nil
	})
}

// removeDeleted removes from the task's side of t what was in the sandbox
// after the copy in and is not in it now.
func (s *Sync) removeDeleted(t Tree, now map[string]bool) (int, error) {
	n := 0
	for k := range s.state {
		rel, ok := cutTree(k, t.Name)
		if !ok || now[k] {
			continue
		}
		if there, _ := s.Task.Exists(path.Join(t.Task, rel)); there {
			if err := s.Task.RemoveAll(path.Join(t.Task, rel)); err != nil {
				return n, err
			}
			n++
		}
	}
	return n, nil
}

func cutTree(key, tree string) (string, bool) {
	if len(key) <= len(tree)+1 || key[:len(tree)+1] != tree+"/" {
		return "", false
	}
	return key[len(tree)+1:], true
}
