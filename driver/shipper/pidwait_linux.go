package shipper

import (
	"context"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// waitProcessExit waits until process pid (not our child: a shipper outlives
// the plugin that started it) has exited, or ctx ends. It watches a pidfd
// through Go's poller, so a wait costs nothing until the exit; where pidfds
// are not available it polls. alive tells whether pid is still the process
// meant (pids get reused).
func waitProcessExit(ctx context.Context, pid int, alive func() bool) error {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return pollProcessExit(ctx, alive)
	}
	f := os.NewFile(uintptr(fd), "pidfd")
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return pollProcessExit(ctx, alive)
	}
	stop := context.AfterFunc(ctx, func() { _ = f.SetReadDeadline(time.Now()) })
	defer stop()
	beforePidWait()
	// The pidfd turns readable once, at the exit (and again at the reap),
	// and the poller is edge-triggered: Read forgets an edge that came
	// before it armed its wait. So whether the process still lives is asked
	// in the first call of fn, which Read makes once armed: an exit after
	// that answer wakes the wait; one before it is the answer. Asked before
	// Read, a helper that exited (and was reaped) between the answer and the
	// arming was waited for until ctx ended: for a shipper, the task's whole
	// life, its exit never reported.
	asked := false
	err = rc.Read(func(uintptr) bool { // false: wait until readable, which is the exit
		if asked {
			return true // woken: the pidfd is readable only once its process exited
		}
		asked = true
		return !alive() // the pidfd may name a newer process with a reused pid
	})
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return ctx.Err()
	default: // not pollable here (os.ErrNoDeadline)
		return pollProcessExit(ctx, alive)
	}
}
