package shipper

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/agentkernel/agentkernel-pool/driver/sandbox"
)

// FollowFunc follows a run's output from the offsets from, writing it to stdout
// and stderr and reporting progress, until the run has exited and its output is
// drained (sandbox.Runner.Follow).
type FollowFunc func(ctx context.Context, ref sandbox.Ref, runID string, from sandbox.Offsets, stdout, stderr io.Writer, progress func(sandbox.Offsets)) (sandbox.ExitStatus, error)

// Copy copies a run's output into the task's FIFOs in this process, from the
// saved offsets, until the run has exited and its output is drained. It is what
// the shipper process runs, and what a backend without shipper processes (the
// driver's test fake) calls.
func Copy(ctx context.Context, follow FollowFunc, job Job) (sandbox.ExitStatus, error) {
	stdout, stderr := newFIFOWriter(ctx, job.Stdout), newFIFOWriter(ctx, job.Stderr)
	// One wait for a reader for both: when logmon is gone, it is gone for both
	// FIFOs, and the run's end must not wait for each in turn.
	var noReader time.Time
	stdout.noReaderSince, stderr.noReaderSince = &noReader, &noReader
	defer stdout.Close()
	defer stderr.Close()
	// Open both at once, as Nomad's executors do: logmon waits for a writer on
	// each FIFO, and one never opened holds the task's end for seconds.
	for _, w := range []*fifoWriter{stdout, stderr} {
		if err := w.ensureOpen(); err != nil {
			return sandbox.ExitStatus{}, err
		}
	}
	saver := newOffsetSaver(job.Offsets)
	st, err := follow(ctx, job.Ref, job.RunID, loadOffsets(job.Offsets), stdout, stderr, saver.save)
	saver.flush()
	return st, err
}

// fifoWriter writes to a log FIFO, reopening it when its reader goes away.
type fifoWriter struct {
	ctx  context.Context
	path string
	f    *os.File
	// noReaderSince, when set, is shared with the other FIFO's writer (both
	// are written from one goroutine): when their wait for a reader began,
	// zero while they have one.
	noReaderSince *time.Time
}

func newFIFOWriter(ctx context.Context, path string) *fifoWriter {
	return &fifoWriter{ctx: ctx, path: path}
}

func (w *fifoWriter) Write(p []byte) (int, error) {
	if w.path == "" || w.path == os.DevNull {
		return len(p), nil
	}
	written := 0
	for written < len(p) {
		if err := w.ensureOpen(); err != nil {
			return written, err
		}
		n, err := w.f.Write(p[written:])
		written += n
		if err != nil {
			if !errors.Is(err, syscall.EPIPE) {
				return written, err
			}
			w.f.Close() // the reader went away: wait for the next one
			w.f = nil
		}
	}
	return written, nil
}

// ensureOpen opens the FIFO unless it is open (or there is none).
func (w *fifoWriter) ensureOpen() error {
	if w.f != nil || w.path == "" || w.path == os.DevNull {
		return nil
	}
	f, err := w.open()
	if err != nil {
		return err
	}
	w.f = f
	return nil
}

// open waits for a reader without blocking in the kernel, so ctx can end the wait.
func (w *fifoWriter) open() (*os.File, error) {
	if w.noReaderSince == nil {
		return openFIFO(w.ctx, w.path, fifoReopenWait)
	}
	if w.noReaderSince.IsZero() {
		*w.noReaderSince = time.Now()
	}
	f, err := openFIFO(w.ctx, w.path, max(0, time.Until(w.noReaderSince.Add(fifoReopenWait))))
	if err == nil {
		*w.noReaderSince = time.Time{}
	}
	return f, err
}

// openFIFO opens a log FIFO for writing once it has a reader, waiting at most
// wait for one (zero: one try).
func openFIFO(ctx context.Context, path string, wait time.Duration) (*os.File, error) {
	deadline := time.Now().Add(wait)
	for {
		// No symlink is followed: the log FIFO sits in the task group's shared
		// alloc dir, which the group's other tasks can write.
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|syscall.O_NONBLOCK|syscall.O_NOFOLLOW, 0)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, syscall.ENXIO) && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("open log %s: %w", path, err)
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("open log %s: no reader (logmon gone?)", path)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(fifoReopenPoll):
		}
	}
}

func (w *fifoWriter) Close() error {
	if w.f == nil {
		return nil
	}
	return w.f.Close()
}
