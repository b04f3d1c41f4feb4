package driver

import (
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"time"

	"github.com/agentkernel/agentkernel-pool/driver/allocfs"
	"github.com/agentkernel/agentkernel-pool/driver/taskfiles"
)

// Task files: a sandbox task sees what Nomad prepared for it, and leaves its
// results where Nomad users look (package taskfiles). The copy in runs on the
// start path before the command; the copy back when the command has exited,
// before its exit is reported, and when an idle task is stopped; a refresh
// before each signal and when the task's files change (filesWatch).

// files is the task's sync with its sandbox, made once per handle.
func (h *taskHandle) files() *taskfiles.Sync {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.sync == nil {
		h.sync = &taskfiles.Sync{
			Task:      allocfs.New(h.cfg.AllocDir, h.cfg.AllocID).WithHardLinks(),
			Sandbox:   allocfs.New(h.state.HostAllocDir, h.state.Claim.AllocID),
			Trees:     taskfiles.Trees(h.cfg.Name, h.state.Claim.TaskName),
			UID:       h.state.FilesUID,
			GID:       h.state.FilesGID,
			StatePath: privateFile(h.cfg.AllocDir, h.cfg.Name, ".agentkernel-files.json"),
		}
	}
	return h.sync
}

// sandboxOwner is who the sandbox's task runs as: the launch session said
// so; without one, the owner of the sandbox task's local/ dir.
func sandboxOwner(b *Backend, h *taskHandle) (int, int) {
	if uid, gid, ok := b.Runner.SessionUser(h.state.Claim.AllocID); ok {
		return uid, gid
	}
	d := allocfs.New(h.state.HostAllocDir, h.state.Claim.AllocID)
	if e, err := d.Lstat(filepath.Join(h.state.Claim.TaskName, "local")); err == nil {
		return e.UID, e.GID
	}
	return -1, -1
}

// copyIn copies the task's files into its sandbox before the command starts.
func (d *Driver) copyIn(h *taskHandle) error {
	begin := time.Now()
	st, err := h.files().In()
	if err != nil {
		return fmt.Errorf("task files into sandbox %s: %w", short(h.state.Claim.AllocID), err)
	}
	d.emit(h.cfg, fmt.Sprintf("Copied task files into sandbox %s: %s in %s%s", short(h.state.Claim.AllocID), countFiles(st),
		time.Since(begin).Round(time.Microsecond), skipped(st)), map[string]string{"mechanism": "copy", "files": strconv.Itoa(st.Files)})
	return nil
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
	begin := time.Now()
	st, err := h.files().Out()
	if err != nil {
		msg := fmt.Sprintf("Results not copied back from sandbox %s: %v", short(h.state.Claim.AllocID), err)
		if errors.Is(err, taskfiles.ErrLimit) {
			msg = fmt.Sprintf("Results not copied back from sandbox %s, nothing written: %v", short(h.state.Claim.AllocID), err)
		}
		d.logger.Warn("copying the task's files back failed", "task_id", h.cfg.ID, "error", err)
		d.emit(h.cfg, msg, map[string]string{"sandbox_alloc_id": h.state.Claim.AllocID})
		return
	}
	d.emit(h.cfg, fmt.Sprintf("Copied results back from sandbox %s: %s, %d removed, in %s%s", short(h.state.Claim.AllocID), countFiles(st),
		st.Removed, time.Since(begin).Round(time.Microsecond), skipped(st)), map[string]string{"sandbox_alloc_id": h.state.Claim.AllocID})
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
