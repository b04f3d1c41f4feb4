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
	if !alive() { // the pidfd may name a newer process with a reused pid
		return nil
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return pollProcessExit(ctx, alive)
	}
	stop := context.AfterFunc(ctx, func() { _ = f.SetReadDeadline(time.Now()) })
	defer stop()
	waited := false
	err = rc.Read(func(uintptr) bool { // false: wait until readable, which is the exit
		done := waited
		waited = true
		return done
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
