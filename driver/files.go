package driver

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/agentkernel/agentkernel-pool/driver/allocfs"
	"github.com/agentkernel/agentkernel-pool/driver/nsmount"
	"github.com/agentkernel/agentkernel-pool/driver/taskfiles"
	"github.com/agentkernel/agentkernel-pool/plugin"
)

// Task files: a sandbox task sees what Nomad prepared for it, and leaves its
// results where Nomad users look (package taskfiles, package nsmount). The
// copy in (or mount) runs on the start path before the command; the copy back
// (and unmount) when the command has exited, before its exit is reported, and
// when an idle task is stopped; a refresh before each signal and when the
// task's files change (filesWatch).

// How a task's files reach its sandbox (driverState.FilesWay), chosen per
// start and named in the start's task event:
const (
	// filesDirect: the sandbox shares the host's filesystem (raw_exec, whose
	// session sees its alloc dir at the host path): the command is given the
	// task's own dirs. Nothing is copied, mounted or copied back.
	filesDirect = "direct"
	// filesMount: the group's alloc/data, often large (a cloned repository),
	// is mounted into the sandbox's own mount namespace (package nsmount:
	// exec, docker with runc), nosuid and nodev; local/ and secrets/, small
	// and owned by the sandbox's user, are copied. What the sandbox writes
	// there lands in the task's alloc/data as it wrote it, so the mount is
	// refused (and the tree copied) unless the sandbox's processes are
	// unprivileged on the host: not root, no capability, none to gain
	// (nsmount.ErrPrivileged).
	filesMount = "mount"
	// filesCopy: everything is copied (gVisor, whose processes the host does
	// not see; or the mount was refused).
	filesCopy = "copy"
)

// files is the task's sync with its sandbox, made once per handle.
func (h *taskHandle) files() *taskfiles.Sync {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.sync == nil {
		trees := taskfiles.Trees(h.cfg.Name, h.state.Claim.TaskName)
		if h.state.FilesWay == filesMount {
			trees = slices.DeleteFunc(trees, func(t taskfiles.Tree) bool { return t.Name == sharedTree })
		}
		h.sync = &taskfiles.Sync{
			Task:      h.taskDir(),
			Sandbox:   h.sandboxDir(),
			Trees:     trees,
			UID:       h.state.FilesUID,
			GID:       h.state.FilesGID,
			StatePath: privateFile(h.cfg.AllocDir, h.cfg.Name, ".agentkernel-files.state"),
		}
	}
	return h.sync
}

// sharedTree is the tree a mount shares.
const sharedTree = "alloc/data"

func (h *taskHandle) taskDir() allocfs.Dir {
	return allocfs.New(h.cfg.AllocDir, h.cfg.AllocID).WithHardLinks()
}

func (h *taskHandle) sandboxDir() allocfs.Dir {
	return allocfs.New(h.state.HostAllocDir, h.state.Claim.AllocID)
}

// chooseFiles chooses how the task's files reach the sandbox (h.state's
// Files fields), from what its launch session said when priming: its user,
// where it sees its alloc dir, its mount namespace. Without a session the
// files are copied, owned by the owner of the sandbox task's local/. A copy
// chosen for a primed sandbox says why in h.filesWhy.
func (h *taskHandle) chooseFiles(b Backend) {
	st := &h.state
	st.Files, st.FilesWay, st.FilesUID, st.FilesGID = true, filesCopy, -1, -1
	if info, ok := b.SessionInfo(st.Claim.AllocID); ok {
		st.FilesUID, st.FilesGID = info.UID, info.GID
		switch {
		case info.SharesHost(st.ref()):
			st.Files, st.FilesWay = false, filesDirect
		case info.NamespacePID > 0:
			st.FilesWay, st.NamespacePID = filesMount, info.NamespacePID
		default:
			h.filesWhy = nsmount.ErrNotFound.Error()
		}
		return
	}
	if e, err := h.sandboxDir().Lstat(filepath.Join(st.Claim.TaskName, "local")); err == nil {
		st.FilesUID, st.FilesGID = e.UID, e.GID
	}
}

// directEnv is the env of a task whose sandbox shares the host's filesystem:
// its dir variables name the task's own dirs on the host, as raw_exec sets them.
func directEnv(cfg *plugin.TaskConfig) map[string]string {
	env := sandboxEnv(cfg.Env)
	env["NOMAD_ALLOC_DIR"] = filepath.Join(cfg.AllocDir, "alloc")
	env["NOMAD_TASK_DIR"] = filepath.Join(cfg.AllocDir, cfg.Name, "local")
	env["NOMAD_SECRETS_DIR"] = filepath.Join(cfg.AllocDir, cfg.Name, "secrets")
	return env
}

// copyIn brings the task's files into its sandbox before the command starts,
// the way h.state.FilesWay says; a mount the sandbox refuses turns into a
// copy, named in the event.
func (d *Driver) copyIn(h *taskHandle) error {
	begin := time.Now()
	sb := short(h.state.Claim.AllocID)
	if h.state.FilesWay == filesDirect {
		d.emit(h.cfg, fmt.Sprintf("Sandbox %s shares the host's filesystem: the command uses the task's own dirs, nothing copied", sb),
			map[string]string{"mechanism": filesDirect})
		return nil
	}
	if h.state.FilesWay == filesMount {
		err := h.mountShared()
		d.logger.Debug("task files: mount", "task_id", h.cfg.ID, "took", time.Since(begin), "error", err)
		if err != nil {
			h.mu.Lock()
			h.state.FilesWay, h.sync, h.filesWhy = filesCopy, nil, err.Error()
			h.mu.Unlock()
		}
	}
	var fallback string
	if h.filesWhy != "" {
		fallback = fmt.Sprintf(" (%s copied: %s)", sharedTree, h.filesWhy)
	}
	st, err := h.files().In()
	if err != nil {
		return fmt.Errorf("task files into sandbox %s: %w", sb, err)
	}
	msg := fmt.Sprintf("Copied task files into sandbox %s: %s in %s%s%s", sb, countFiles(st), time.Since(begin).Round(time.Microsecond), skipped(st), fallback)
	if h.state.FilesWay == filesMount {
		msg = fmt.Sprintf("Mounted %s into sandbox %s and copied local/ and secrets/ (%s) in %s%s", sharedTree, sb, countFiles(st), time.Since(begin).Round(time.Microsecond), skipped(st))
	}
	d.emit(h.cfg, msg, map[string]string{"mechanism": h.state.FilesWay, "files": strconv.Itoa(st.Files)})
	return nil
}

// mountShared mounts the group's alloc/data over the sandbox's, inside the
// sandbox's mount namespace.
func (h *taskHandle) mountShared() error {
	return h.withShared(func(ns *nsmount.Namespace, src *os.File) error { return ns.Mount(src, sharedTree) })
}

// unmountShared ends the sandbox's view of the group's alloc/data: what its
// processes do after the command has exited does not reach the task.
func (h *taskHandle) unmountShared() error {
	err := h.withShared(func(ns *nsmount.Namespace, src *os.File) error { return ns.Unmount(src, sharedTree) })
	if errors.Is(err, nsmount.ErrNotFound) {
		return nil // the sandbox is gone, its namespace and the mount with it
	}
	return err
}

func (h *taskHandle) withShared(fn func(*nsmount.Namespace, *os.File) error) error {
	alloc, err := h.sandboxDir().OpenDir("alloc")
	if err != nil {
		return err
	}
	defer alloc.Close()
	// Priming found the namespace (NamespacePID); a scan of every process
	// when that process is gone or was never found.
	ns, err := nsmount.Open(h.state.NamespacePID, alloc, "alloc")
	if err != nil {
		ns, err = nsmount.Find(h.state.Claim.AllocID, alloc, "alloc")
	}
	if err != nil {
		return err
	}
	defer ns.Close()
	src, err := h.taskDir().OpenDir(sharedTree)
	if err != nil {
		return err
	}
	defer src.Close()
	return fn(ns, src)
}

// copyOut copies back what the command left in local/ and alloc/data, once.
// A write-back over its bounds, or refused, is a task event; the task's exit
// is reported either way.
func (d *Driver) copyOut(h *taskHandle) {
	if !h.state.Files {
		return
	}
	h.mu.Lock()
	done := h.filesOut
	h.filesOut = true
	h.mu.Unlock()
	if done {
		return
	}
	if h.state.FilesWay == filesMount {
		if err := h.unmountShared(); err != nil {
			d.logger.Warn("unmounting alloc/data from the sandbox failed", "task_id", h.cfg.ID, "sandbox_alloc_id", h.state.Claim.AllocID, "error", err)
		}
	}
	begin := time.Now()
	st, err := h.files().Out()
	if err != nil {
		d.logger.Warn("copying the task's files back failed", "task_id", h.cfg.ID, "error", err)
		d.emit(h.cfg, copyOutFailed(h.state.Claim.AllocID, st, err), map[string]string{"sandbox_alloc_id": h.state.Claim.AllocID})
		return
	}
	d.emit(h.cfg, fmt.Sprintf("Copied results back from sandbox %s: %s, %d removed, in %s%s", short(h.state.Claim.AllocID), countFiles(st),
		st.Removed, time.Since(begin).Round(time.Microsecond), skipped(st)), map[string]string{"sandbox_alloc_id": h.state.Claim.AllocID})
}

// copyOutFailed is the task event of a write-back that failed with err after
// writing st: nothing written when a bound stopped it before it began.
func copyOutFailed(sandbox string, st taskfiles.Stats, err error) string {
	if errors.Is(err, taskfiles.ErrLimit) && !errors.Is(err, taskfiles.ErrPartial) {
		return fmt.Sprintf("Results not copied back from sandbox %s, nothing written: %v", short(sandbox), err)
	}
	return fmt.Sprintf("Results not copied back from sandbox %s: %v (written before it stopped: %s, %d removed)", short(sandbox), err, countFiles(st), st.Removed)
}

// refreshFiles brings what Nomad changed in the task's files (a re-rendered
// template) into the sandbox.
func (d *Driver) refreshFiles(h *taskHandle) {
	if !h.state.Files {
		return
	}
	h.mu.Lock()
	out := h.filesOut
	h.mu.Unlock()
	if out {
		return
	}
	if st, err := h.files().Refresh(); err != nil {
		d.logger.Warn("refreshing the task's files in its sandbox failed", "task_id", h.cfg.ID, "error", err)
	} else if st.Files > 0 {
		d.logger.Debug("refreshed task files in the sandbox", "task_id", h.cfg.ID, "files", st.Files)
	}
}

func countFiles(st taskfiles.Stats) string {
	return fmt.Sprintf("%d files, %d bytes", st.Files, st.Bytes)
}

func skipped(st taskfiles.Stats) string {
	if st.Skipped == 0 {
		return ""
	}
	return fmt.Sprintf(" (%d special or hard-linked files left out)", st.Skipped)
}
