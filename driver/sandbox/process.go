package sandbox

import (
	"bytes"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"syscall"
)

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
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	found := 0
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil || groupOf(pid) != pgid {
			continue
		}
		if carriesAllocDir(environOf(pid), dir) {
			found++
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
	f := statFields(pid)
	if len(f) <= n {
		return -1
	}
	v, err := strconv.Atoi(string(f[n]))
	if err != nil {
		return -1
	}
	return v
}

// statState is a process's state letter from /proc/<pid>/stat ("R", "S",
// "Z", ...), or "" when there is no such process.
func statState(pid int) string {
	if f := statFields(pid); len(f) > 0 {
		return string(f[0])
	}
	return ""
}

// statFields are the fields of /proc/<pid>/stat after the command name
// (state, parent pid, group id, ...), or none when there is no such process.
func statFields(pid int) [][]byte {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return nil
	}
	// pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil
	}
	return bytes.Fields(b[i+1:])
}
