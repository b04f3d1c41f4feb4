package sandbox

import (
	"bytes"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"syscall"
)

// reapOrphans kills what is left of a run whose sandbox is gone. Under exec and
// docker the sandbox's teardown kills it, and under raw_exec with cgroups v2 so
// does the task's cgroup; but under raw_exec with cgroups v1 Nomad leaves running
// what it did not start itself. Its pids are host pids then. The supervisor is
// taken for the run's only if its command line is this run's launcher or the
// launch daemon and its environment puts the alloc dir at this allocation's host path; the command
// only if the supervisor is its parent. So a reused pid, or a pid of another
// namespace, is never hit. The command leads its own session (setsid), which is
// killed whole.
func reapOrphans(ref Ref, runID string) (killed bool) {
	fields, ok, _ := readRecord(ref.files(), path.Join(runRel(runID), filePid))
	if !ok || len(fields) < 2 {
		return false
	}
	cmd, err1 := strconv.Atoi(fields[0])
	sup, err2 := strconv.Atoi(fields[1])
	if err1 != nil || err2 != nil || cmd <= 1 || sup <= 1 || !isSupervisor(sup, ref, runID) {
		return false
	}
	if parentOf(cmd) == sup {
		if syscall.Kill(-cmd, syscall.SIGKILL) != nil {
			_ = syscall.Kill(cmd, syscall.SIGKILL)
		}
	}
	return syscall.Kill(sup, syscall.SIGKILL) == nil
}

func isSupervisor(pid int, ref Ref, runID string) bool {
	proc := filepath.Join("/proc", strconv.Itoa(pid))
	cmdline, err := os.ReadFile(filepath.Join(proc, "cmdline"))
	launcher := bytes.Contains(cmdline, []byte("\x00akp-launch\x00"+runID+"\x00run\x00"))
	daemon := bytes.HasSuffix(cmdline, []byte("\x00akp-session\x00"))
	if err != nil || !bytes.HasPrefix(cmdline, []byte("/bin/sh\x00-c\x00")) || !launcher && !daemon {
		return false
	}
	environ, err := os.ReadFile(filepath.Join(proc, "environ"))
	if err != nil {
		return false
	}
	want := []byte("NOMAD_ALLOC_DIR=" + filepath.Join(ref.HostAllocDir, "alloc"))
	for _, kv := range bytes.Split(environ, []byte{0}) {
		if bytes.Equal(bytes.TrimRight(kv, "/"), want) {
			return true
		}
	}
	return false
}

// parentOf reads a process's parent pid from /proc, or -1.
func parentOf(pid int) int { return statField(pid, 1) }

// Reap kills what is left of a finished or stopped run's process group: the
// command's children that outlived it (a stopped `sh -c "a; b"` leaves b).
// Under exec and docker the sandbox's teardown ends them anyway; under raw_exec
// on cgroups v1 nothing else would. The group is the command's session, so its
// id is the command's pid; it is killed only while a member of it carries this
// sandbox's alloc dir (in NOMAD_ALLOC_DIR, or AGENTKERNEL_SANDBOX_ALLOC_DIR where
// the command was given the task's dirs), so a reused pid is never hit. It returns how many
// members it found.
func Reap(ref Ref, runID string) int {
	if ref.HostAllocDir == "" || checkRunID(runID) != nil {
		return 0
	}
	fields, ok, _ := readRecord(ref.files(), path.Join(runRel(runID), filePid))
	if !ok || len(fields) < 1 {
		return 0
	}
	pgid, err := strconv.Atoi(fields[0])
	if err != nil || pgid <= 1 {
		return 0
	}
	dir := filepath.Join(ref.HostAllocDir, "alloc")
	want := [][]byte{[]byte("NOMAD_ALLOC_DIR=" + dir), []byte(envSandboxAllocDir + "=" + dir)}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	found := 0
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil || groupOf(pid) != pgid {
			continue
		}
		environ, err := os.ReadFile(filepath.Join(d, "environ"))
		if err != nil {
			continue
		}
		for _, kv := range bytes.Split(environ, []byte{0}) {
			kv = bytes.TrimRight(kv, "/")
			if bytes.Equal(kv, want[0]) || bytes.Equal(kv, want[1]) {
				found++
				break
			}
		}
	}
	if found > 0 {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	}
	return found
}

// groupOf reads a process's group id from /proc, or -1.
func groupOf(pid int) int { return statField(pid, 2) }

// statField reads the n-th number after the command name in /proc/<pid>/stat
// (0 is the state, 1 the parent pid, 2 the group id), or -1.
func statField(pid, n int) int {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return -1
	}
	// pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return -1
	}
	f := bytes.Fields(b[i+1:])
	if len(f) <= n {
		return -1
	}
	v, err := strconv.Atoi(string(f[n]))
	if err != nil {
		return -1
	}
	return v
}
