package sandbox

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/agentkernel/agentkernel-pool/driver/nsmount"
)

// End ends what the host can end of the sandbox's processes, before its
// task's exit is reported, so nothing of it writes into the task's dirs
// while poststop tasks read them. The sandbox is single-use, so everything
// in it goes, the warm task's own process included:
//   - exec and runc sandboxes (nsPID > 0: the process priming found in the
//     sandbox's mount namespace): every process of the sandbox's mount
//     namespace or of its own pid namespace, SIGKILLed through pidfds
//     (nsmount.Namespace.KillAll);
//   - raw_exec: what is left of the run's process group (Reap);
//   - gVisor: nothing; its processes run on gVisor's kernel, not the host's,
//     and nothing of the host is mounted into it (everything is copied), so
//     after the copy back nothing it does reaches the task's dirs.
//
// It returns how many processes it signalled. An error wrapping
// nsmount.ErrSurvivors means some were still there after every round; any
// other error, that the sandbox's processes could not be looked for.
func (r *Runner) End(ref Ref, runID string, nsPID int) (int, error) {
	n := Reap(ref, runID)
	if nsPID <= 0 || ref.HostAllocDir == "" {
		return n, nil
	}
	alloc, err := ref.files().OpenDir("alloc")
	if errors.Is(err, fs.ErrNotExist) {
		return n, nil // the sandbox is gone, and its processes with it
	}
	if err != nil {
		return n, fmt.Errorf("end the processes of sandbox %s: %w", ref.short(), err)
	}
	defer alloc.Close()
	// The process priming found, or any process of the sandbox when that
	// one is gone; none means the sandbox has no process left on the host.
	ns, err := nsmount.Open(nsPID, alloc, "alloc")
	if err != nil {
		ns, err = nsmount.Find(ref.AllocID, alloc, "alloc")
	}
	if errors.Is(err, nsmount.ErrNotFound) {
		return n, nil
	}
	if err != nil {
		return n, fmt.Errorf("end the processes of sandbox %s: %w", ref.short(), err)
	}
	defer ns.Close()
	killed, err := ns.KillAll()
	if err != nil {
		err = fmt.Errorf("end the processes of sandbox %s: %w", ref.short(), err)
	}
	return n + killed, err
}
