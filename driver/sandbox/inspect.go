package sandbox

import (
	"bytes"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// RunState is what the host can see of a run without an API call: its
// records, read through the boundary, and, where the sandbox's pids are the
// host's (HostPids), whether its processes live. It is for the driver's
// watchdog and its dumps: nothing in it decides who gets a sandbox.
type RunState struct {
	Dir      bool // the run dir is there
	Launched bool // the run's O_EXCL marker is taken
	// Pid and Supervisor are the pid record's (0 while there is none).
	Pid, Supervisor int
	Exited          bool
	Exit            ExitStatus
	// Alive says a process of the run lives: the command or its supervisor,
	// each counted only while it is not a zombie and carries this sandbox's
	// alloc dir in its environment (as Reap tells the run's processes), so a
	// reused pid reads as gone. Meaningful only with HostPids.
	Alive bool
	// Err is the first refusal of the boundary (a tampered record), or nil.
	Err error
}

// String is the state in one line, for logs and task events.
func (s RunState) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "run dir %t, launched %t, pid record ", s.Dir, s.Launched)
	if s.Pid == 0 {
		b.WriteString("none")
	} else {
		fmt.Fprintf(&b, "%d (supervisor %d, alive %t)", s.Pid, s.Supervisor, s.Alive)
	}
	if s.Exited {
		fmt.Fprintf(&b, ", exit record %d", s.Exit.Code)
	} else {
		b.WriteString(", no exit record")
	}
	if s.Err != nil {
		fmt.Fprintf(&b, ", %v", s.Err)
	}
	return b.String()
}

// Inspect reads the run's state from the host. hostPids says the sandbox's
// pids are the host's (raw_exec, whose sandboxes share the host): only then
// is Alive looked up. A record the sandbox rewrote into something else
// (pid numbers that do not parse) counts as absent; the pids are never used
// to act on a process.
func Inspect(ref Ref, runID string, hostPids bool) RunState {
	var s RunState
	if err := checkRunID(runID); err != nil {
		s.Err = err
		return s
	}
	files, dir := ref.files(), runRel(runID)
	note := func(err error) {
		if err != nil && s.Err == nil {
			s.Err = err
		}
	}
	var err error
	s.Dir, err = files.Exists(dir)
	note(err)
	if !s.Dir {
		return s
	}
	s.Launched, err = files.Exists(path.Join(dir, fileLaunched))
	note(err)
	fields, ok, err := readRecord(files, path.Join(dir, filePid))
	note(err)
	if ok && len(fields) >= 2 {
		pid, err1 := strconv.Atoi(fields[0])
		sup, err2 := strconv.Atoi(fields[1])
		if err1 == nil && err2 == nil && pid > 1 && sup > 1 {
			s.Pid, s.Supervisor = pid, sup
		}
	}
	s.Exit, s.Exited, err = readExit(files, dir)
	note(err)
	if hostPids && s.Pid != 0 && ref.HostAllocDir != "" {
		s.Alive = runProcess(ref, s.Pid) || runProcess(ref, s.Supervisor)
	}
	return s
}

// runProcess reports whether pid is a live process of the sandbox: not a
// zombie, with the sandbox's alloc dir in its environment.
func runProcess(ref Ref, pid int) bool {
	if st := statState(pid); st == "" || st == "Z" {
		return false
	}
	return carriesAllocDir(environOf(pid), filepath.Join(ref.HostAllocDir, "alloc"))
}

// environOf reads a process's environment (NUL-separated) from /proc, or nil.
// A process in the middle of an execve shows an empty environment for that
// while (its old memory is gone, its new stack not yet set up), and a run's
// commands exec all the time: an empty read is tried again a few times, so
// such a process is not taken for one without the sandbox's variables. A
// process whose environment is really empty costs the retries and is not
// the sandbox's.
func environOf(pid int) []byte {
	p := filepath.Join("/proc", strconv.Itoa(pid), "environ")
	for try := 0; ; try++ {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil
		}
		if len(b) > 0 || try == 3 {
			return b
		}
		time.Sleep(time.Millisecond)
	}
}

// carriesAllocDir reports whether an environment (NUL-separated) gives dir as
// the sandbox's alloc dir, the way Reap knows a run's processes.
func carriesAllocDir(environ []byte, dir string) bool {
	want := [][]byte{[]byte("NOMAD_ALLOC_DIR=" + dir), []byte(envSandboxAllocDir + "=" + dir)}
	for _, kv := range bytes.Split(environ, []byte{0}) {
		kv = bytes.TrimRight(kv, "/")
		if bytes.Equal(kv, want[0]) || bytes.Equal(kv, want[1]) {
			return true
		}
	}
	return false
}
