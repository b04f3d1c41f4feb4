// Package shipper ships a task's output from its sandbox's run files into the
// task's log FIFOs. Nomad's logmon copies a task's log FIFO until every writer has
// closed it. If the plugin process held the only writer, a plugin crash or
// restart would end the task's logs for good. So the copying runs in a small
// process of its own (this binary with the hidden `__ship` command), which
// outlives the plugin like the command does, and a log holder (`__hold`, see
// hold.go) keeps the FIFOs open while shippers come and go. A restarted plugin
// adopts the running shipper, or starts a new one that resumes from the saved
// offsets.
//
// The driver needs three functions: Run ships a run through these processes
// until it has exited (supervise.go: a small state machine whose actions are
// the shipper's, here, and the log holder's, hold.go), Stop ends them when the task goes, and Main is the
// processes' side, which the binary runs for ShipCommand and HoldCommand.
// Copy is the copying itself, in the calling process.
package shipper

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
	"strings"
	"syscall"
	"time"

	"github.com/agentkernel/agentkernel-pool/driver/allocfs"
	"github.com/agentkernel/agentkernel-pool/driver/sandbox"
	"github.com/agentkernel/agentkernel-pool/internal/untrusted"
)

// Job names a run and where its output goes.
type Job struct {
	Ref     sandbox.Ref
	RunID   string
	Stdout  string // the task's stdout FIFO
	Stderr  string
	Offsets string // where shipped offsets are saved
}

// ShipCommand is the hidden CLI command that runs an output shipper process.
const ShipCommand = "__ship"

// lastWords is ": " and the last line of a helper's log (what it said before
// it exited), quoted and cut, or nothing. The log is the plugin's own file in
// the task's private dir, read without following a symlink, its last 1 KiB
// only; but what the helper said may quote what it read from the sandbox.
func lastWords(path string) string {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return ""
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return ""
	}
	const tail = 1 << 10
	b := make([]byte, tail)
	n, _ := f.ReadAt(b, max(fi.Size()-tail, 0))
	lines := strings.Split(strings.TrimSpace(string(b[:n])), "\n")
	if last := strings.TrimSpace(lines[len(lines)-1]); last != "" {
		return ": " + untrusted.Text(last)
	}
	return ""
}

// Stop ends a run's shipper and its log holder, if they run, waits for
// their exit, and removes the files they kept beside the offsets. Once it
// returns nothing of this run holds the task's log FIFOs, so logmon has read
// their end before the task is started again: Nomad's logmon opens the FIFOs
// anew for the next attempt only when it has read the end of the last one's
// (otherwise it keeps its old readers, and the next attempt's output goes
// into pipes no one reads).
func Stop(job Job) {
	if pid := shipperPID(job); pid != 0 {
		stopProcess(pid, func() bool { return processAlive(pid, ShipCommand, job.RunID) })
	}
	stopHolder(job)
	forget(job)
}

// forget removes a run's files in the task's private dir: its offsets and
// its helpers' pid files, log and tampering record. Each run has its own (a
// restarted task's next attempt ships its run from the start).
func forget(job Job) {
	if job.Offsets == "" {
		return
	}
	for _, suffix := range []string{"", ".tmp", ".shipper.pid", ".holder.pid", ".shipper.log", ".tampered"} {
		_ = os.Remove(job.Offsets + suffix)
	}
}

// Main is the helper process this binary runs when args[0] is ShipCommand
// (an output shipper) or HoldCommand (a log holder); the rest of args are its
// flags. It returns the process's exit code.
func Main(args []string, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case ShipCommand:
			return shipMain(args[1:], stderr)
		case HoldCommand:
			return holdMain(args[1:], stderr)
		}
	}
	fmt.Fprintf(stderr, "not a shipper or log holder command: %q\n", args)
	return 2
}

// helperStart is how a helper process begins: its job from its command line
// (parseJob), and a context that SIGTERM or SIGINT ends, which is how the
// plugin stops it (stopProcess). ok is false after it said what is wrong.
func helperStart(name string, args []string, stderr io.Writer, offsets bool) (job Job, ctx context.Context, cancel context.CancelFunc, ok bool) {
	if job, ok = parseJob(name, args, stderr, offsets); !ok {
		return job, nil, nil, false
	}
	ctx, cancel = signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	return job, ctx, cancel, true
}

// parseJob reads a shipper's or log holder's command line (offsets: the
// shipper's offsets file too); ok is false after it said what is wrong.
func parseJob(name string, args []string, stderr io.Writer, offsets bool) (job Job, ok bool) {
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

// shipMain is the shipper process: it copies one run's output into the task's log
// FIFOs until the run exits, its sandbox disappears, or it is told to stop.
func shipMain(args []string, stderr io.Writer) int {
	job, ctx, cancel, ok := helperStart(ShipCommand, args, stderr, true)
	if !ok {
		return 2
	}
	defer cancel()
	go func() { // a purged sandbox ends the shipper, so none outlives its task
		for ctx.Err() == nil {
			if gone, _ := runGone(job); gone {
				cancel()
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(runGoneCheckEvery):
			}
		}
	}()
	r := &sandbox.Runner{}
	if _, err := Copy(ctx, r.Follow, job); err != nil && ctx.Err() == nil {
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
func shipperTamperedPath(job Job) string { return job.Offsets + ".tampered" }

func recordTampered(job Job, t *allocfs.TamperedError) {
	if b, err := json.Marshal(t); err == nil {
		_ = os.WriteFile(shipperTamperedPath(job), b, 0o600)
	}
}

// tampered is what a shipper recorded, or nil.
func tampered(job Job) error {
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

func shipperPIDPath(job Job) string { return job.Offsets + ".shipper.pid" }

// startShipper starts a detached shipper process and records its pid.
func startShipper(job Job) (int, error) {
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
func shipperPID(job Job) int {
	return recordedPID(shipperPIDPath(job), ShipCommand, job.RunID)
}

func short(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}
