package nomadtest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Kill ends the agent process alone with SIGKILL, as a crash would, and
// waits for it: its plugins, helpers and tasks keep running, as they do
// under a service manager that kills only the main process (Nomad's
// systemd unit, KillMode=process). Restart starts it again on the same
// data dir; Stop also ends what the killed agent left.
func (a *Agent) Kill() {
	a.mu.Lock()
	cmd, done := a.cmd, a.done
	a.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
	a.mu.Lock()
	a.killed = append(a.killed, cmd.Process.Pid)
	a.mu.Unlock()
}

// KilledProcesses lists the pids of processes left in the groups of
// agents Kill ended whose executable has the given base name.
func (a *Agent) KilledProcesses(name string) []int {
	a.mu.Lock()
	groups := slices.Clone(a.killed)
	a.mu.Unlock()
	return groupProcesses(name, groups)
}

// Processes lists the pids of processes in the agent's process group whose
// executable has the given base name (for example the plugin's).
func (a *Agent) Processes(name string) []int {
	a.mu.Lock()
	cmd := a.cmd
	a.mu.Unlock()
	if cmd == nil {
		return nil
	}
	return groupProcesses(name, []int{cmd.Process.Pid})
}

// groupProcesses lists the pids of processes in one of the process groups
// whose executable has the given base name.
func groupProcesses(name string, groups []int) []int {
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
		if pgid, err := syscall.Getpgid(pid); err == nil && slices.Contains(groups, pgid) {
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

// dockerAllocLabel is the label Nomad's docker driver gives every container:
// its allocation's ID.
const dockerAllocLabel = "com.hashicorp.nomad.alloc_id"

// Containers lists the docker containers, running or not, of the agent's
// allocations: those that bind-mount a dir of its data dir. None where
// docker is absent. Neither the agent's API nor its alloc dirs can say: a
// stopping dev agent removes its alloc dirs, and a purged sandbox leaves the
// API's list while its container may still run (a gVisor container whose
// stop was in flight when the agent stopped). Docker present but not
// answering is an error, not "none": a leak check must not pass unread.
func (a *Agent) Containers() ([]string, error) {
	if _, err := exec.LookPath("docker"); err != nil {
		return nil, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", "ps", "-aq", "--filter", "label="+dockerAllocLabel).Output()
	if err != nil {
		return nil, fmt.Errorf("docker ps: %w", err)
	}
	all := strings.Fields(string(out))
	if len(all) == 0 {
		return nil, nil
	}
	out, err = exec.CommandContext(ctx, "docker", append([]string{"inspect", "--format", "{{.ID}}{{range .Mounts}} {{.Source}}{{end}}"}, all...)...).Output()
	if err != nil {
		return nil, fmt.Errorf("docker inspect: %w", err)
	}
	mine := filepath.Clean(a.DataDir) + string(filepath.Separator)
	var ids []string
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) > 1 && slices.ContainsFunc(f[1:], func(src string) bool { return strings.HasPrefix(src, mine) }) {
			ids = append(ids, f[0])
		}
	}
	return ids, nil
}

// removeContainers removes the agent's docker containers.
func (a *Agent) removeContainers() {
	ids, err := a.Containers()
	if err != nil {
		a.t.Logf("cannot list the stopped agent's docker containers: %v", err)
	}
	if len(ids) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "docker", append([]string{"rm", "-f"}, ids...)...).CombinedOutput(); err != nil {
		a.t.Logf("remove the stopped agent's %d docker containers: %v: %s", len(ids), err, out)
	}
}
