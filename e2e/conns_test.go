package e2e

import (
	"bufio"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-pool/internal/nomadtest"
)

// TestConnectionsDoNotGrowWithTasks: Nomad allows each client address 100
// concurrent HTTP connections (limits.http_max_conns_per_client) and answers
// 429 beyond. The plugin must not hold a connection per running task, or a
// node with about 100 sandbox tasks would lock it out: with 8 tasks running,
// the plugin holds no more connections to the agent than with none.
func TestConnectionsDoNotGrowWithTasks(t *testing.T) {
	if _, err := nomadtest.Binary(); err != nil {
		t.Skipf("skipping e2e: %v", err)
	}
	const tasks = 8
	a := nomadtest.Start(t, nomadtest.Options{PluginDir: nomadtest.BuildPlugin(t),
		PluginConfig: poolBlock("dev", rawExecTemplate(t), 2, 2*tasks)})
	waitWarm(t, a, "dev", 2)
	time.Sleep(2 * time.Second)
	idle := pluginConns(t, a)

	var allocs []*api.Allocation
	for i := range tasks {
		allocs = append(allocs, runJob(t, a, faultJob(t, fmt.Sprintf("e2e-conns-%d", i), 0, "echo started; exec sleep 600")))
	}
	for _, al := range allocs {
		waitTask(t, a, al.ID, "agent", "running", 90*time.Second)
	}
	waitWarm(t, a, "dev", 2)
	time.Sleep(3 * time.Second) // stats streams and watches settle
	busy := pluginConns(t, a)
	t.Logf("plugin connections to the agent: %d idle, %d with %d tasks running", idle, busy, tasks)
	if busy > idle+tasks/2 {
		t.Errorf("the plugin holds %d connections with %d tasks running, %d without: it grows with the tasks", busy, tasks, idle)
	}
}

// pluginConns counts the plugin process's established TCP connections to the
// agent's HTTP port.
func pluginConns(t *testing.T, a *nomadtest.Agent) int {
	t.Helper()
	u, err := url.Parse(a.Addr)
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil {
		t.Fatal(err)
	}
	toAgent := map[string]bool{} // socket inodes
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		t.Skipf("no /proc/net/tcp: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 || fields[3] != "01" { // 01: established
			continue
		}
		if _, p, ok := strings.Cut(fields[2], ":"); ok {
			if n, err := strconv.ParseInt(p, 16, 32); err == nil && int(n) == port {
				toAgent[fields[9]] = true
			}
		}
	}
	n := 0
	for _, pid := range pluginPIDs(t, a) {
		fds, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fd/*", pid))
		for _, fd := range fds {
			link, err := os.Readlink(fd)
			if inode, ok := strings.CutPrefix(link, "socket:["); err == nil && ok && toAgent[strings.TrimSuffix(inode, "]")] {
				n++
			}
		}
	}
	return n
}
