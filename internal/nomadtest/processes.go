package nomadtest

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Processes lists the pids of processes in the agent's process group whose
// executable has the given base name (for example the plugin's).
func (a *Agent) Processes(name string) []int {
	a.mu.Lock()
	cmd := a.cmd
	a.mu.Unlock()
	if cmd == nil {
		return nil
	}
	var pids []int
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		exe, err := os.Readlink(d + "/exe")
		if err != nil || filepath.Base(exe) != name {
			continue
		}
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil {
			continue
		}
		if pgid, err := syscall.Getpgid(pid); err == nil && pgid == cmd.Process.Pid {
			pids = append(pids, pid)
		}
	}
	return pids
}

// detached lists processes outside the agent's group that belong to it: helpers
// whose command line names a path in this agent's dir (the plugin's output
// shippers, Nomad's executors) and tasks, which carry one of this agent's
// allocation ids, or a path in its dir (NOMAD_ALLOC_DIR under raw_exec), in
// their environment, and helpers such as logmon, which inherit the NOMAD_ADDR
// the agent was started with. A -dev agent removes its alloc dirs as it shuts down,
// so the paths are what is left to tell its tasks by then.
func (a *Agent) detached() []int {
	var markers [][]byte
	allocs, _ := os.ReadDir(filepath.Join(a.DataDir, "alloc"))
	for _, e := range allocs {
		markers = append(markers, []byte("NOMAD_ALLOC_ID="+e.Name()+"\x00"))
	}
	var pids []int
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil || pid == os.Getpid() {
			continue
		}
		if b, err := os.ReadFile(d + "/cmdline"); err == nil && bytes.Contains(b, []byte(a.dir+"/")) {
			pids = append(pids, pid)
			continue
		}
		env, err := os.ReadFile(d + "/environ")
		if err != nil {
			continue
		}
		if bytes.Contains(env, []byte(a.dir+"/")) || bytes.Contains(env, []byte("NOMAD_ADDR="+a.Addr+"\x00")) {
			pids = append(pids, pid) // a task, or a helper of the agent's (logmon)
			continue
		}
		for _, m := range markers {
			if bytes.Contains(env, m) {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

// unmountBelow detaches every mount under dir, deepest first.
func unmountBelow(dir string) {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return
	}
	var points []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 1 && strings.HasPrefix(f[1], dir+"/") {
			points = append(points, f[1])
		}
	}
	for i := len(points) - 1; i >= 0; i-- {
		_ = syscall.Unmount(points[i], syscall.MNT_DETACH)
	}
}
