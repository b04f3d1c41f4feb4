package sandbox

import (
	"strconv"
	"sync"

	"github.com/fsnotify/fsnotify"

	"github.com/agentkernel/agentkernel-pool/driver/allocfs"
)

// dirWatch wakes a follower when anything in a run dir is written or created,
// so output reaches the task log as it is written instead of at the next
// poll. Without inotify (the per-user instance limit, another OS) Follow
// polls as before.
type dirWatch struct {
	w    *fsnotify.Watcher
	wake chan struct{}
	done sync.WaitGroup
}

// watchDir watches the dir rel of files; it returns nil when it cannot. The
// watch is placed on the directory the boundary opened (through its
// /proc/self/fd link), never on whatever a path names by the time inotify
// resolves it.
func watchDir(files allocfs.Dir, rel string) *dirWatch {
	dir, err := files.OpenDir(rel)
	if err != nil {
		return nil
	}
	defer dir.Close()
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil
	}
	if err := w.Add("/proc/self/fd/" + strconv.Itoa(int(dir.Fd()))); err != nil {
		w.Close()
		return nil
	}
	d := &dirWatch{w: w, wake: make(chan struct{}, 1)}
	d.done.Add(1)
	go func() {
		defer d.done.Done()
		for {
			select {
			case _, ok := <-w.Events:
				if !ok {
					return
				}
				select {
				case d.wake <- struct{}{}:
				default: // a wake-up is pending already
				}
			case _, ok := <-w.Errors:
				if !ok {
					return
				}
			}
		}
	}()
	return d
}

// wakeups is the channel to wait on; nil (never ready) without a watch.
func (d *dirWatch) wakeups() <-chan struct{} {
	if d == nil {
		return nil
	}
	return d.wake
}

// close stops the watch and its goroutine.
func (d *dirWatch) close() {
	if d == nil {
		return
	}
	d.w.Close()
	d.done.Wait()
}
