package sandbox

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// The hand-out mark: what says "this sandbox was handed out" must not be
// anything the sandbox can touch. A claim's record is written behind the
// start (pool write-behind), so for a few milliseconds after a hand-out
// nothing in Nomad says the sandbox is taken; a plugin that restarts then
// must still never hand it out again. The mark is an empty file the plugin
// creates in the sandbox allocation's own dir on the host, beside Nomad's
// alloc/ and <task>/ dirs, not in them: the exec driver's chroot is the task
// dir (<alloc dir>/<task>, with alloc/ bind-mounted inside it), docker
// (runc or gVisor) binds alloc/, local/ and secrets/ only, so no isolated
// sandbox sees the allocation dir itself, and Nomad makes it root's, mode
// 0755, where the task user owns alloc/ and the task dir. Under raw_exec
// the command is a host process: one running as root could remove it, as
// it could do anything else on the host.
//
// It is created with O_EXCL before anything of the task enters the
// sandbox, so a second hand-out of the same sandbox fails there, whatever
// the pool believes; it survives plugin restarts (a file), and goes with
// the allocation when Nomad collects its dir. Nomad's FS API lists it
// (`nomad alloc fs <sandbox> /`) and reads it: it is empty, mode 0400.

// markName is the mark's name in the allocation dir.
const markName = ".agentkernel-handed-out"

// ErrMarked means the sandbox's hand-out mark is there: it was handed out
// before.
var ErrMarked = errors.New("sandbox was handed out before (its hand-out mark is on the host)")

// allocDir opens the sandbox allocation's dir on the host. Its path is the
// client's alloc root joined with the allocation id, both Nomad's, so it is
// trusted; its last component is never a symlink.
func (r Ref) allocDir() (int, error) {
	if r.HostAllocDir == "" {
		return -1, errors.New("no host dir for the sandbox allocation")
	}
	fd, err := unix.Open(r.HostAllocDir, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, &fs.PathError{Op: "open", Path: r.HostAllocDir, Err: err}
	}
	return fd, nil
}

// Mark creates the sandbox's hand-out mark. It fails with ErrMarked when
// the mark is there already, and with any other error when it cannot be
// made: then the sandbox must not be used.
func (r Ref) Mark() error {
	dir, err := r.allocDir()
	if err != nil {
		return fmt.Errorf("mark sandbox %s handed out: %w", r.short(), err)
	}
	defer unix.Close(dir)
	fd, err := unix.Openat(dir, markName, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o400)
	if errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("mark sandbox %s handed out: %w", r.short(), ErrMarked)
	}
	if err != nil {
		return fmt.Errorf("mark sandbox %s handed out: %w", r.short(), &fs.PathError{Op: "create", Path: r.markPath(), Err: err})
	}
	// The mode is set through the descriptor: the umask must not decide it.
	err = unix.Fchmod(fd, 0o400)
	unix.Close(fd)
	if err != nil {
		return fmt.Errorf("mark sandbox %s handed out: %w", r.short(), &fs.PathError{Op: "chmod", Path: r.markPath(), Err: err})
	}
	return nil
}

// Marked reports whether the sandbox's hand-out mark is there. Anything by
// that name counts (only the plugin can put something there). An error
// means the absence of the mark is not proven.
func (r Ref) Marked() (bool, error) {
	dir, err := r.allocDir()
	if err != nil {
		return false, fmt.Errorf("look for the hand-out mark of sandbox %s: %w", r.short(), err)
	}
	defer unix.Close(dir)
	var st unix.Stat_t
	switch err := unix.Fstatat(dir, markName, &st, unix.AT_SYMLINK_NOFOLLOW); {
	case err == nil:
		return true, nil
	case errors.Is(err, unix.ENOENT):
		return false, nil
	default:
		return false, fmt.Errorf("look for the hand-out mark of sandbox %s: %w", r.short(), &fs.PathError{Op: "stat", Path: r.markPath(), Err: err})
	}
}

// markPath is the mark's path, for messages.
func (r Ref) markPath() string { return filepath.Join(r.HostAllocDir, markName) }
