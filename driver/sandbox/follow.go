package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/agentkernel/agentkernel-pool/driver/allocfs"
	"github.com/agentkernel/agentkernel-pool/internal/untrusted"
)

// Offsets are how many bytes of the run's stdout and stderr were delivered.
type Offsets struct {
	Stdout int64 `json:"stdout"`
	Stderr int64 `json:"stderr"`
}

// ExitStatus is how a run's command ended. A death by signal n has Code 128+n
// and Signal n, as Nomad's own executors report it.
type ExitStatus struct {
	Code   int `json:"code"`
	Signal int `json:"signal"`
}

// Follow copies the run's stdout and stderr from the given offsets to the writers
// until the command has exited and both are drained, then returns its exit
// status. It reports offsets through progress (when not nil) after each copy, so
// a caller can persist them and follow again after a restart without loss; output
// written but not yet persisted is delivered again (at least once). It returns
// ctx's error when ctx ends. It reads host files only: whoever follows a run
// learns from the pool that its sandbox died, and ends ctx.
func (r *Runner) Follow(ctx context.Context, ref Ref, runID string, from Offsets,
	stdout, stderr io.Writer, progress func(Offsets)) (ExitStatus, error) {
	if err := checkRunID(runID); err != nil {
		return ExitStatus{}, fmt.Errorf("follow run in allocation %s: %w", ref.short(), err)
	}
	files, dir := ref.files(), runRel(runID)
	if err := awaitPidRecord(ctx, files, dir, pidRecordWait); err != nil {
		return ExitStatus{}, fmt.Errorf("follow run %s in allocation %s: %w", runID, ref.short(), err)
	}
	out := &tail{files: files, rel: path.Join(dir, fileStdout), off: from.Stdout, w: stdout}
	errOut := &tail{files: files, rel: path.Join(dir, fileStderr), off: from.Stderr, w: stderr}
	defer out.close()
	defer errOut.close()

	watch := watchDir(files, dir)
	defer watch.close()
	every := orDefault(r.PollInterval, DefaultPollInterval)
	if watch != nil {
		every = max(every, WatchedPollInterval)
	}
	poll := time.NewTicker(every)
	defer poll.Stop()
	// round copies once from both files; more says a file had more to give.
	round := func() (more bool, err error) {
		n1, err1 := out.copy()
		n2, err2 := errOut.copy()
		if n1+n2 > 0 && progress != nil {
			progress(Offsets{Stdout: out.off, Stderr: errOut.off})
		}
		if err := errors.Join(err1, err2); err != nil {
			return false, fmt.Errorf("follow run %s in allocation %s: %w", runID, ref.short(), err)
		}
		return n1 >= maxCopyRound || n2 >= maxCopyRound, nil
	}
	// drain copies all that is left once the command has exited.
	drain := func(st ExitStatus) (ExitStatus, error) {
		for {
			more, err := round()
			if err != nil || !more {
				return st, err
			}
			if ctx.Err() != nil {
				return ExitStatus{}, ctx.Err()
			}
		}
	}
	for {
		// Read exit before copying: all output written before the exit record is
		// then copied by drain.
		st, exited, err := readExit(files, dir)
		if err != nil {
			// What the output files hold is still the command's: ship what
			// can be read through the boundary before giving up.
			_, _ = round()
			return ExitStatus{}, fmt.Errorf("follow run %s in allocation %s: %w", runID, ref.short(), err)
		}
		if exited {
			return drain(st)
		}
		more, err := round()
		if err != nil {
			return ExitStatus{}, err
		}
		if more {
			if ctx.Err() != nil {
				return ExitStatus{}, ctx.Err()
			}
			continue
		}
		select {
		case <-ctx.Done():
			return ExitStatus{}, ctx.Err()
		case <-poll.C:
		case <-watch.wakeups():
		}
	}
}

// awaitPidRecord waits until the run in dir has recorded its pid. A run
// without a dir is not waited for: ErrNoRun at once.
func awaitPidRecord(ctx context.Context, files allocfs.Dir, dir string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for delay := pidRecordPollFirst; ; delay = min(delay*2, pidRecordPollMax) {
		_, ok, err := readRecord(files, path.Join(dir, filePid))
		if err != nil || ok {
			return err
		}
		if exists, err := files.Exists(dir); err != nil || !exists {
			if err == nil {
				err = fmt.Errorf("%w: no run dir", ErrNoRun)
			}
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: no pid recorded within %s", ErrNoRun, limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
	}
}

// Status reads the run's exit status from the host, without an API call;
// exited is false while the command runs.
func (r *Runner) Status(ref Ref, runID string) (st ExitStatus, exited bool, err error) {
	if err := checkRunID(runID); err != nil {
		return ExitStatus{}, false, err
	}
	files, dir := ref.files(), runRel(runID)
	if ok, err := files.Exists(dir); err != nil || !ok {
		if err != nil {
			return ExitStatus{}, false, fmt.Errorf("run %s in allocation %s: %w", runID, ref.short(), err)
		}
		return ExitStatus{}, false, fmt.Errorf("run %s in allocation %s: %w", runID, ref.short(), ErrNoRun)
	}
	return readExit(files, dir)
}

// readExit reads the exit record: "<code>\n" from the shell supervisor, or
// "<code> <signal>\n". A record without its newline is not complete yet.
func readExit(files allocfs.Dir, dir string) (ExitStatus, bool, error) {
	fields, ok, err := readRecord(files, path.Join(dir, fileExit))
	if err != nil || !ok {
		return ExitStatus{}, false, err
	}
	code, err := strconv.Atoi(fields[0])
	if err != nil {
		return ExitStatus{}, false, fmt.Errorf("bad exit record %s", untrusted.Text(strings.Join(fields, " ")))
	}
	st := ExitStatus{Code: code}
	if len(fields) > 1 {
		if st.Signal, err = strconv.Atoi(fields[1]); err != nil {
			return ExitStatus{}, false, fmt.Errorf("bad exit record %s", untrusted.Text(strings.Join(fields, " ")))
		}
	} else if code > 128 && code <= 128+64 {
		st.Signal = code - 128
	}
	return st, true, nil
}

// maxRecord bounds a record the plugin reads: one line of a few numbers. The
// sandbox can write anything there; more than this is tampering.
const maxRecord = 256

// readRecord reads a one-line record through the boundary; ok is false while
// it is absent or has no newline yet.
func readRecord(files allocfs.Dir, rel string) ([]string, bool, error) {
	b, err := files.ReadRecord(rel, maxRecord)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	line, _, found := bytes.Cut(b, []byte("\n"))
	fields := strings.Fields(string(line))
	if !found || len(fields) == 0 {
		return nil, false, nil
	}
	return fields, true, nil
}

// tail copies a growing file to a writer from an offset. It opens the file
// once, through the boundary; what the sandbox does to the name afterwards
// does not change what it reads.
type tail struct {
	files allocfs.Dir
	rel   string
	off   int64
	w     io.Writer
	f     *os.File
	buf   []byte
}

// maxCopyRound bounds one round of copying a file, so a command that writes
// faster than the writer takes does not keep Follow from its context and the
// other file.
const maxCopyRound = 4 << 20

// copy writes what the file has beyond the offset, up to maxCopyRound; the
// offset moves only by what the writer took.
func (t *tail) copy() (int64, error) {
	if t.f == nil {
		f, err := t.files.OpenFile(t.rel)
		if errors.Is(err, fs.ErrNotExist) {
			return 0, nil // the supervisor has not made it yet
		}
		if err != nil {
			return 0, err
		}
		t.f, t.buf = f, make([]byte, 32<<10)
	}
	var total int64
	for {
		n, err := t.f.ReadAt(t.buf, t.off)
		if n > 0 {
			wn, werr := n, error(nil)
			if t.w != nil {
				wn, werr = t.w.Write(t.buf[:n])
			}
			t.off += int64(wn)
			total += int64(wn)
			if werr != nil {
				return total, fmt.Errorf("copy %s: %w", path.Base(t.rel), werr)
			}
		}
		if err == io.EOF || n == 0 || total >= maxCopyRound {
			return total, nil
		}
		if err != nil {
			return total, fmt.Errorf("read %s: %w", path.Base(t.rel), err)
		}
	}
}

func (t *tail) close() {
	if t.f != nil {
		t.f.Close()
	}
}
