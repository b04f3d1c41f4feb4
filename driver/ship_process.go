package driver

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/agentkernel/agentkernel-pool/driver/allocfs"
	"github.com/agentkernel/agentkernel-pool/driver/sandbox"
)

// ShipCommand is the hidden CLI command that runs an output shipper process.
const ShipCommand = "__ship"

// maxShipperStarts bounds how often one task's shipper is restarted.
const maxShipperStarts = 5

// parseJob reads a shipper's or log holder's command line (offsets: the
// shipper's offsets file too); ok is false after it said what is wrong.
func parseJob(name string, args []string, stderr io.Writer, offsets bool) (job shipJob, ok bool) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&job.Ref.HostAllocDir, "alloc-dir", "", "host dir of the sandbox allocation")
	fs.StringVar(&job.Ref.AllocID, "alloc", "", "sandbox allocation id")
	fs.StringVar(&job.RunID, "run", "", "run id")
	fs.StringVar(&job.Stdout, "stdout", "", "stdout FIFO")
	fs.StringVar(&job.Stderr, "stderr", "", "stderr FIFO")
	if offsets {
		fs.StringVar(&job.Offsets, "offsets", "", "offsets file")
	}
	if err := fs.Parse(args); err != nil {
		return job, false
	}
	if job.Ref.HostAllocDir == "" || job.RunID == "" {
		fmt.Fprintf(stderr, "%s: -alloc-dir and -run are required\n", name)
		return job, false
	}
	return job, true
}

// ShipMain is the shipper process: it copies one run's output into the task's log
// FIFOs until the run exits, its sandbox disappears, or it is told to stop.
func ShipMain(args []string, stderr io.Writer) int {
	job, ok := parseJob(ShipCommand, args, stderr, true)
	if !ok {
		return 2
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	go func() { // a purged sandbox ends the shipper, so none outlives its task
		for ctx.Err() == nil {
			if ok, err := job.Ref.RunExists(job.RunID); err == nil && !ok {
				cancel()
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}()
	r := &sandbox.Runner{}
	if _, err := shipOutput(ctx, r.Follow, job); err != nil && ctx.Err() == nil {
		fmt.Fprintf(stderr, "ship run %s: %v\n", job.RunID, err)
		if t := (*allocfs.TamperedError)(nil); errors.As(err, &t) {
			recordTampered(job, t)
		}
		return 1
	}
	return 0
}

// The shipper tells the plugin that the sandbox tampered with the run's files
// in a file beside the offsets, in the task's own dir (the plugin cannot read
// the exit code of a process it did not start). A tampered run is not shipped
// again: a new shipper would find the same.
func shipperTamperedPath(job shipJob) string { return job.Offsets + ".tampered" }

func recordTampered(job shipJob, t *allocfs.TamperedError) {
	if b, err := json.Marshal(t); err == nil {
		_ = os.WriteFile(shipperTamperedPath(job), b, 0o600)
	}
}

// tampered is what a shipper recorded, or nil.
func tampered(job shipJob) error {
	b, err := os.ReadFile(shipperTamperedPath(job))
	if err != nil {
		return nil
	}
	var t allocfs.TamperedError
	if json.Unmarshal(b, &t) != nil {
		return nil
	}
	return &t
}

// processShipper runs shipOutput in a shipper process that outlives the plugin.
type processShipper struct {
	runner *sandbox.Runner
}

func shipperPIDPath(job shipJob) string { return job.Offsets + ".shipper.pid" }

// ship adopts or starts the task's shipper process and waits until the run has
// exited and its output is shipped. Ending ctx leaves the shipper and the log
// holder running; otherwise the holder is stopped before ship returns, so logmon
// has read the end of the logs when the exit is reported.
func (p processShipper) ship(ctx context.Context, job shipJob) (sandbox.ExitStatus, error) {
	st, err := p.follow(ctx, job)
	if ctx.Err() == nil {
		stopHolder(job)
	}
	return st, err
}

// follow keeps a shipper running, and the log holder behind it, until the run
// has exited and its output is shipped.
func (p processShipper) follow(ctx context.Context, job shipJob) (sandbox.ExitStatus, error) {
	for starts := 0; ; {
		pid := shipperPID(job)
		if err := tampered(job); pid == 0 && err != nil {
			return sandbox.ExitStatus{}, err
		}
		if pid == 0 {
			if st, exited, err := p.runner.Status(job.Ref, job.RunID); err == nil && exited && starts > 0 {
				return st, nil
			}
			if starts >= maxShipperStarts {
				return sandbox.ExitStatus{}, fmt.Errorf("output shipper of run %s exited %d times before the run ended (see %s.shipper.log)", job.RunID, starts, job.Offsets)
			}
			// The holder first: from now on a shipper's death does not end the
			// logs. Without one (no reader: logmon gone) the shipper still runs:
			// it waits for a reader, and the run's exit code is reported.
			_ = ensureHolder(ctx, job, holderOpenWait)
			var err error
			if pid, err = startShipper(job); err != nil {
				return sandbox.ExitStatus{}, err
			}
			starts++
		}
		if err := waitShipper(ctx, job, pid); err != nil {
			return sandbox.ExitStatus{}, err
		}
		_ = os.Remove(shipperPIDPath(job))
		if err := tampered(job); err != nil {
			return sandbox.ExitStatus{}, err
		}
		if st, exited, err := p.runner.Status(job.Ref, job.RunID); err == nil && exited {
			return st, nil
		}
		if ok, err := job.Ref.RunExists(job.RunID); err != nil || !ok {
			if err == nil {
				err = fmt.Errorf("run %s is gone from sandbox %s", job.RunID, short(job.Ref.AllocID))
			}
			return sandbox.ExitStatus{}, err
		}
	}
}

// startShipper starts a detached shipper process and records its pid.
func startShipper(job shipJob) (int, error) {
	exe, err := os.Executable()
	if err != nil {
		return 0, fmt.Errorf("start output shipper: %w", err)
	}
	logf, err := os.OpenFile(job.Offsets+".shipper.log", os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return 0, fmt.Errorf("start output shipper: %w", err)
	}
	defer logf.Close()
	cmd := exec.Command(exe, ShipCommand,
		"-alloc-dir", job.Ref.HostAllocDir, "-alloc", job.Ref.AllocID, "-run", job.RunID,
		"-stdout", job.Stdout, "-stderr", job.Stderr, "-offsets", job.Offsets)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // not in the agent's group or session
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start output shipper: %w", err)
	}
	pid := cmd.Process.Pid
	go func() { _ = cmd.Wait() }() // reap it while this plugin lives
	if err := os.WriteFile(shipperPIDPath(job), []byte(strconv.Itoa(pid)), 0o600); err != nil {
		_ = cmd.Process.Kill()
		return 0, fmt.Errorf("record output shipper pid: %w", err)
	}
	return pid, nil
}

// shipperPID is the pid of the task's running shipper, or 0.
func shipperPID(job shipJob) int {
	return recordedPID(shipperPIDPath(job), ShipCommand, job.RunID)
}

// stopShipper ends a task's shipper and its log holder, if they run.
func stopShipper(job shipJob) {
	if pid := shipperPID(job); pid != 0 {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	_ = os.Remove(shipperPIDPath(job))
	stopHolder(job)
}

// pollProcessExit checks alive every 50 ms until it is false or ctx ends.
func pollProcessExit(ctx context.Context, alive func() bool) error {
	for alive() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}
