package nomadtest

import (
	"bytes"
	"context"
	"net"
	"os"
	"syscall"
	"time"

	"github.com/hashicorp/nomad/api"
)

// What a test does with a running agent: read its node, wait for a driver,
// restart or stop it, read its log.

// Node reads the agent's node with its drivers and attributes.
func (a *Agent) Node(ctx context.Context) (*api.Node, error) {
	n, _, err := a.Client.Nodes().Info(a.NodeID, (&api.QueryOptions{}).WithContext(ctx))
	return n, err
}

// WaitDriver waits until the node reports driver name detected and returns its info;
// ok says whether cond held before the timeout.
func (a *Agent) WaitDriver(name string, timeout time.Duration, cond func(*api.DriverInfo) bool) (*api.DriverInfo, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var last *api.DriverInfo
	for {
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		n, err := a.Node(rctx)
		rcancel()
		if err == nil && n.Drivers != nil {
			if d := n.Drivers[name]; d != nil {
				last = d
				if cond(d) {
					return d, true
				}
			}
		}
		if !sleep(ctx, 250*time.Millisecond) {
			return last, false
		}
	}
}

// Running reports whether the agent process is alive.
func (a *Agent) Running() bool { return !a.exited() }

func (a *Agent) exited() bool {
	a.mu.Lock()
	done := a.done
	a.mu.Unlock()
	if done == nil {
		return true
	}
	select {
	case <-done:
		return true
	default:
		return false
	}
}

// Restart stops the agent gracefully and starts it again with the same data dir.
func (a *Agent) Restart() {
	a.t.Helper()
	a.stopAgentOnly()
	if err := a.launch(); err != nil {
		a.t.Fatalf("restart nomad agent: %v", err)
	}
	a.Client = nil
	if err := a.waitReady(a.opts.StartTimeout); err != nil {
		a.t.Fatalf("nomad agent not ready after restart: %v\nlog tail:\n%s", err, a.LogTail(40))
	}
	if a.Token != "" {
		a.Client.SetSecretID(a.Token)
	}
}

// stopAgentOnly interrupts the agent (graceful: tasks keep running) and waits for it.
func (a *Agent) stopAgentOnly() {
	a.mu.Lock()
	cmd, done := a.cmd, a.done
	a.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(os.Interrupt)
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// Stop stops the agent and everything it started (its process group), by pid.
func (a *Agent) Stop() {
	a.mu.Lock()
	cmd := a.cmd
	a.mu.Unlock()
	if cmd == nil {
		return
	}
	a.stopAgentOnly()
	// Tasks and plugins were started in the agent's process group; end them too.
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	a.mu.Lock()
	killed := a.killed
	a.killed = nil
	a.mu.Unlock()
	for _, pgid := range killed {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	}
	// Tasks and detached helpers live outside the group.
	for _, pid := range a.detached() {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	// And containers under dockerd.
	a.removeContainers()
	a.mu.Lock()
	a.cmd = nil
	a.mu.Unlock()
}

// LogTail returns the last n lines of the agent log.
func (a *Agent) LogTail(n int) string {
	b, err := os.ReadFile(a.LogPath)
	if err != nil {
		return err.Error()
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// Log returns the whole agent log.
func (a *Agent) Log() string {
	b, _ := os.ReadFile(a.LogPath)
	return string(b)
}

func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var ports []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func sleep(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}
