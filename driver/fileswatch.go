package driver

import (
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// filesWatch brings what Nomad changes in running tasks' local/ and secrets/
// (templates rendered again, with change_mode "noop" or "restart" too) into
// their sandboxes within refreshDelay, with one inotify instance for all
// tasks. Signals do not wait for it: SignalTask refreshes first.
type filesWatch struct {
	d *Driver

	mu      sync.Mutex
	w       *fsnotify.Watcher          // nil until the first task, or when inotify is unavailable
	dirs    map[string]map[string]bool // watched dir -> task IDs
	pending map[string]*time.Timer     // task ID -> refresh due
}

const (
	// maxWatchedDirs bounds the dirs watched for one task.
	maxWatchedDirs = 64
	// watchDepth is how deep under local/ and secrets/ dirs are watched.
	watchDepth = 2
)

func newFilesWatch(d *Driver) *filesWatch {
	return &filesWatch{d: d, dirs: map[string]map[string]bool{}, pending: map[string]*time.Timer{}}
}

// add watches a task's local/ and secrets/ (and their dirs, not symlinks,
// watchDepth deep).
func (fw *filesWatch) add(h *taskHandle) {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	if fw.w == nil {
		w, err := fsnotify.NewWatcher()
		if err != nil {
			fw.d.logger.Warn("cannot watch task files; templates rendered again reach sandboxes only before a signal", "error", err)
			return
		}
		fw.w = w
		fw.d.wg.Add(1)
		go func() {
			defer fw.d.wg.Done()
			fw.loop(w)
		}()
	}
	n := 0
	var visit func(dir string, depth int)
	visit = func(dir string, depth int) {
		if n >= maxWatchedDirs {
			return
		}
		if fi, err := os.Lstat(dir); err != nil || !fi.IsDir() {
			return
		}
		if fw.dirs[dir] == nil {
			if err := fw.w.Add(dir); err != nil {
				return
			}
			fw.dirs[dir] = map[string]bool{}
		}
		fw.dirs[dir][h.cfg.ID] = true
		n++
		if depth == watchDepth {
			return
		}
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if e.IsDir() {
				visit(filepath.Join(dir, e.Name()), depth+1)
			}
		}
	}
	for _, sub := range []string{"local", "secrets"} {
		visit(filepath.Join(h.cfg.AllocDir, h.cfg.Name, sub), 0)
	}
}

// remove stops watching for a task.
func (fw *filesWatch) remove(taskID string) {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	for dir, tasks := range fw.dirs {
		delete(tasks, taskID)
		if len(tasks) == 0 {
			delete(fw.dirs, dir)
			if fw.w != nil {
				_ = fw.w.Remove(dir)
			}
		}
	}
	if t := fw.pending[taskID]; t != nil {
		t.Stop()
		delete(fw.pending, taskID)
	}
}

func (fw *filesWatch) loop(w *fsnotify.Watcher) {
	for {
		select {
		case <-fw.d.ctx.Done():
			fw.mu.Lock()
			_ = w.Close()
			for _, t := range fw.pending {
				t.Stop()
			}
			fw.mu.Unlock()
			return
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			fw.changed(filepath.Dir(ev.Name))
		case _, ok := <-w.Errors:
			if !ok {
				return
			}
		}
	}
}

// changed schedules a refresh for every task watching dir.
func (fw *filesWatch) changed(dir string) {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	for id := range fw.dirs[dir] {
		if fw.pending[id] != nil {
			continue
		}
		fw.pending[id] = time.AfterFunc(refreshDelay, func() {
			fw.mu.Lock()
			delete(fw.pending, id)
			fw.mu.Unlock()
			if h, ok := fw.d.tasks.get(id); ok {
				fw.d.refreshFiles(h)
			}
		})
	}
}
