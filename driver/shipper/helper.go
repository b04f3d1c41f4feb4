package shipper

import (
	"bytes"
	"context"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// What the two helper processes, the shipper and the log holder, share: how
// the plugin finds one from its pid file, tells it is alive, and stops it.

// stopProcess sends SIGTERM to a helper and waits for its exit; SIGKILL after
// stopWait.
func stopProcess(pid int, alive func() bool) {
	if syscall.Kill(pid, syscall.SIGTERM) != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), stopWait)
	defer cancel()
	if waitProcessExit(ctx, pid, alive) == nil || !alive() {
		return
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	ctx, cancel = context.WithTimeout(context.Background(), stopWait)
	defer cancel()
	_ = waitProcessExit(ctx, pid, alive)
}

// pollProcessExit checks alive every exitPollEvery until it is false or ctx ends.
func pollProcessExit(ctx context.Context, alive func() bool) error {
	for alive() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(exitPollEvery):
		}
	}
	return nil
}

// recordedPID reads a helper's pid file and returns the pid while it is a live
// process running command for runID, else 0.
func recordedPID(path, command, runID string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || !processAlive(pid, command, runID) {
		return 0
	}
	return pid
}

// processAlive reports whether pid is a live helper (command) of runID: pids
// get reused.
func processAlive(pid int, command, runID string) bool {
	dir := "/proc/" + strconv.Itoa(pid)
	cmdline, err := os.ReadFile(dir + "/cmdline")
	if err != nil {
		return false
	}
	stat, _ := os.ReadFile(dir + "/stat")
	var exe, self string
	if len(cmdline) == 0 { // only then does the executable tell
		exe, _ = os.Readlink(dir + "/exe")
		self, _ = os.Executable()
	}
	return helperAlive(cmdline, stat, exe, self, command, runID)
}

// helperAlive is processAlive's rule, from what /proc says of the process:
// not a zombie, and either the helper's command line, or none at all while
// its executable is this plugin's. The latter is a helper in the middle of
// its exec: os/exec's Start returns once the exec is past the point of no
// return, before the kernel has set up the new command line, and a process
// there reads as having none (a loaded machine keeps it there for a while;
// taking it for gone started shippers over and over, then failed the task).
func helperAlive(cmdline, stat []byte, exe, self, command, runID string) bool {
	if i := bytes.LastIndexByte(stat, ')'); i > 0 && bytes.HasPrefix(stat[i+1:], []byte(" Z")) {
		return false // a zombie is done
	}
	if len(cmdline) == 0 {
		return exe != "" && exe == self
	}
	args := strings.Split(string(cmdline), "\x00")
	return len(args) > 1 && args[1] == command && strings.Contains(string(cmdline), "\x00"+runID+"\x00")
}

// runGone reports whether the run's dir is gone from the host for good
// (its sandbox purged): absent on two looks runGoneRecheck apart. A command
// that renames its run dir and puts something else in its place shows the
// dir absent for an instant; what it put there is what tells tampering (an
// error here, or the next shipper's), not the instant.
func runGone(job Job) (bool, error) {
	for look := 0; ; look++ {
		ok, err := job.Ref.RunExists(job.RunID)
		if err != nil || ok {
			return false, err
		}
		if look == 1 {
			return true, nil
		}
		time.Sleep(runGoneRecheck)
	}
}
