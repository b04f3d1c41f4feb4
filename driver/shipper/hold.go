package shipper

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The log holder. Nomad's logmon copies a log FIFO until it reads end of file,
// which comes when the last writer closes it, and then never reads that FIFO
// again while the task runs. A shipper is a writer that can die (SIGKILL, the
// OOM killer), and the plugin with it: had the shipper been the only writer,
// its death would end the task's logs, and a restarted shipper would write into
// a FIFO nobody reads. So each task with a command has a second process, this
// binary's hidden `__hold` command, that keeps both FIFOs open for writing, and
// writes nothing, from before its first shipper starts until its last one has
// drained the run's output. Shippers come and go; logmon sees one stream.

// HoldCommand is the hidden CLI command that runs a task's log holder.
const HoldCommand = "__hold"

// holdMain is the log holder process: it keeps the task's log FIFOs, which it
// inherits as fds 3 (stdout) and 4 (stderr), open for writing until it is told
// to stop or its run is gone. When logmon goes away it opens the FIFOs again for
// the next logmon, as a shipper does.
func holdMain(args []string, stderr io.Writer) int {
	job, ctx, cancel, ok := helperStart(HoldCommand, args, stderr, false)
	if !ok {
		return 2
	}
	defer cancel()
	var held []*heldFIFO
	for i, path := range []string{job.Stdout, job.Stderr} {
		if hasFIFO(path) {
			held = append(held, &heldFIFO{path: path, f: os.NewFile(uintptr(3+i), path)})
		}
	}
	gone := func() bool { gone, _ := runGone(job); return gone }
	if err := holdFIFOs(ctx, held, gone); err != nil && ctx.Err() == nil {
		fmt.Fprintf(stderr, "hold logs of run %s: %v\n", job.RunID, err)
		return 1
	}
	return 0
}

// heldFIFO is a log FIFO held open for writing.
type heldFIFO struct {
	path string
	f    *os.File
}

// holdFIFOs keeps the FIFOs open until ctx ends or gone says the run is gone.
// A FIFO whose reader went away (poll says POLLERR) is closed and opened again
// once a reader is back; with none back within fifoReopenWait it gives up.
func holdFIFOs(ctx context.Context, held []*heldFIFO, gone func() bool) error {
	defer func() {
		for _, h := range held {
			if h.f != nil {
				h.f.Close()
			}
		}
	}()
	if len(held) == 0 {
		return nil
	}
	// A signal ends ctx but need not interrupt the poll below, which may be on
	// another thread: wake it through a pipe of its own.
	wake, wakeW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer wake.Close()
	defer wakeW.Close()
	stop := context.AfterFunc(ctx, func() { wakeW.Close() })
	defer stop()
	for ctx.Err() == nil {
		fds := []unix.PollFd{{Fd: int32(wake.Fd()), Events: unix.POLLIN}}
		for _, h := range held {
			fds = append(fds, unix.PollFd{Fd: int32(h.f.Fd())}) // POLLERR is always reported
		}
		n, err := unix.Poll(fds, int(holdCheckEvery/time.Millisecond))
		if err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("poll log FIFOs: %w", err)
		}
		if ctx.Err() != nil {
			return nil
		}
		if n <= 0 {
			if gone() {
				return nil
			}
			continue
		}
		for i, h := range held {
			if fds[i+1].Revents&(unix.POLLERR|unix.POLLHUP|unix.POLLNVAL) == 0 {
				continue
			}
			h.f.Close() // the reader went away: hold the next one's FIFO
			h.f = nil
			if h.f, err = newFIFOWriter(ctx, h.path).open(); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
		}
	}
	return nil
}

// hasFIFO reports whether path names a log FIFO to write to (logs can be off).
func hasFIFO(path string) bool { return path != "" && path != os.DevNull }

func holderPIDPath(job Job) string { return job.Offsets + ".holder.pid" }

// ensureHolder starts the task's log holder unless one runs, waiting at most
// wait for the FIFOs' reader. The plugin opens the FIFOs itself and hands them
// to the holder, so they are held from the moment it exists.
func ensureHolder(ctx context.Context, job Job, wait time.Duration) error {
	if !hasFIFO(job.Stdout) && !hasFIFO(job.Stderr) {
		return nil
	}
	if holderPID(job) != 0 {
		return nil
	}
	var files []*os.File
	defer func() {
		for _, f := range files {
			if f != nil {
				f.Close()
			}
		}
	}()
	for _, path := range []string{job.Stdout, job.Stderr} {
		var f *os.File
		if hasFIFO(path) {
			var err error
			if f, err = openFIFO(ctx, path, wait); err != nil {
				return fmt.Errorf("start log holder: %w", err)
			}
		}
		files = append(files, f)
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("start log holder: %w", err)
	}
	logf, err := os.OpenFile(job.Offsets+".shipper.log", os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("start log holder: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(exe, HoldCommand,
		"-alloc-dir", job.Ref.HostAllocDir, "-alloc", job.Ref.AllocID, "-run", job.RunID,
		"-stdout", job.Stdout, "-stderr", job.Stderr)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = files
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // not in the agent's group or session
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start log holder: %w", err)
	}
	pid := cmd.Process.Pid
	go func() { _ = cmd.Wait() }() // reap it while this plugin lives
	if err := os.WriteFile(holderPIDPath(job), []byte(strconv.Itoa(pid)), 0o600); err != nil {
		_ = cmd.Process.Kill()
		return fmt.Errorf("record log holder pid: %w", err)
	}
	return nil
}

// holderPID is the pid of the task's running log holder, or 0.
func holderPID(job Job) int {
	return recordedPID(holderPIDPath(job), HoldCommand, job.RunID)
}

// stopHolder ends the task's log holder and waits a little for its exit, so
// logmon reads the end of the logs before the task's exit is reported.
func stopHolder(job Job) {
	if pid := holderPID(job); pid != 0 {
		stopProcess(pid, func() bool { return processAlive(pid, HoldCommand, job.RunID) })
	}
	_ = os.Remove(holderPIDPath(job))
}
