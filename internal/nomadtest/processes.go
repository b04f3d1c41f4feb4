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

	"github.com/hashicorp/nomad/api"
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
// allocations (those with a dir in its data dir, and those its API listed
// when Stop began: rememberAllocs); none where docker is absent. A dev agent destroys its allocations when it stops, unless it
// takes longer than Stop waits: Stop removes what is left.
func (a *Agent) Containers() []string {
	mine := map[string]bool{}
	entries, _ := os.ReadDir(filepath.Join(a.DataDir, "alloc"))
	for _, e := range entries {
		mine[e.Name()] = true
	}
	a.mu.Lock()
	for id := range a.allocs {
		mine[id] = true
	}
	a.mu.Unlock()
	if len(mine) == 0 {
		return nil
	}
	if _, err := exec.LookPath("docker"); err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", "ps", "-aq", "--filter", "label="+dockerAllocLabel,
		"--format", `{{.ID}} {{.Label "`+dockerAllocLabel+`"}}`).Output()
	if err != nil {
		return nil
	}
	var ids []string
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) == 2 && mine[f[1]] {
			ids = append(ids, f[0])
		}
	}
	return ids
}

// rememberAllocs asks the node's API which allocations it holds, so that
// Containers finds their containers once the stopped agent has removed its
// alloc dirs (a 1.10 dev agent does, and leaves gVisor containers running).
func (a *Agent) rememberAllocs() {
	if a.NodeID == "" || a.Client == nil {
		return
	}
	// The list's stubs, not the node's full allocations: after a soak the
	// node holds thousands, each with its job.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	q := &api.QueryOptions{Filter: fmt.Sprintf("NodeID == %q", a.NodeID)}
	allocs, _, err := a.Client.Allocations().List(q.WithContext(ctx))
	if err != nil {
		return // a killed agent: its alloc dirs are still there
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.allocs == nil {
		a.allocs = map[string]bool{}
	}
	for _, al := range allocs {
		a.allocs[al.ID] = true
	}
}

// removeContainers removes the agent's docker containers.
func (a *Agent) removeContainers() {
	ids := a.Containers()
	if len(ids) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "docker", append([]string{"rm", "-f"}, ids...)...).CombinedOutput(); err != nil {
		a.t.Logf("remove the stopped agent's %d docker containers: %v: %s", len(ids), err, out)
	}
}
