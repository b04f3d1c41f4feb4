package e2e

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-pool/driver"
	"github.com/agentkernel/agentkernel-pool/driver/shipper"
	"github.com/agentkernel/agentkernel-pool/internal/nomadtest"
)

// BenchmarkIdleTasks measures what running tasks cost while their commands
// are quiet: 10 sandbox tasks sleep, and the CPU time of the plugin and of each
// task's helpers (output shipper and log holder) is read from /proc over a 20 s
// window. Reported per task, in milliseconds of CPU per second (1 ms/s is 0.1%
// of a core), and the helpers' proportional memory (PSS).
//
//	NOMAD_BIN=/work/bin/nomad go test ./e2e -run '^$' -bench IdleTasks -benchtime 1x
func BenchmarkIdleTasks(b *testing.B) {
	if _, err := nomadtest.Binary(); err != nil {
		b.Skipf("skipping: %v", err)
	}
	const tasks, window = 10, 20 * time.Second
	a := nomadtest.Start(b, nomadtest.Options{PluginDir: nomadtest.BuildPlugin(b),
		PluginConfig: poolBlock("dev", rawExecTemplate(b), tasks, 2*tasks)})
	settle(b, a, "dev", tasks)

	var ids []string
	var allocs []*api.Allocation
	for i := range tasks {
		id := fmt.Sprintf("bench-idle-%d", i)
		allocs = append(allocs, runJob(b, a, faultJob(b, id, 0, "echo started; exec sleep 600")))
		ids = append(ids, id)
	}
	defer func() {
		for _, id := range ids {
			purgeJob(b, a, id)
		}
	}()
	for _, al := range allocs {
		waitTask(b, a, al.ID, "agent", "running", 2*time.Minute)
	}
	time.Sleep(3 * time.Second) // starts and refills settle

	plugin, ships, holds := a.Processes(driver.Name), helpers(a, shipper.ShipCommand), helpers(a, shipper.HoldCommand)
	if len(ships) != tasks || len(holds) != tasks {
		b.Fatalf("%d shipper and %d log holder processes, want %d of each", len(ships), len(holds), tasks)
	}
	ships = append(ships, holds...) // a task's helpers: their cost is the task's
	p0, s0 := cpuTicks(plugin), cpuTicks(ships)
	b.ResetTimer()
	time.Sleep(window)
	b.StopTimer()
	p1, s1 := cpuTicks(plugin), cpuTicks(ships)
	perTask := func(ticks int) float64 { // ticks are 10 ms
		return float64(ticks) * 10 / window.Seconds() / tasks
	}
	b.ReportMetric(perTask(p1-p0), "plugin-cpu-ms/s/task")
	b.ReportMetric(perTask(s1-s0), "helpers-cpu-ms/s/task")
	var pss int64
	for _, p := range ships {
		pss += pssKiB(p)
	}
	b.ReportMetric(float64(pss)/1024/tasks, "helpers-pss-MiB")
	b.ReportMetric(tasks, "tasks")
}

// cpuTicks sums user and system CPU time of the processes, in clock ticks.
func cpuTicks(pids []int) int {
	total := 0
	for _, pid := range pids {
		st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			continue
		}
		i := strings.LastIndexByte(string(st), ')')
		f := strings.Fields(string(st[i+1:]))
		if len(f) > 12 {
			u, _ := strconv.Atoi(f[11])
			s, _ := strconv.Atoi(f[12])
			total += u + s
		}
	}
	return total
}
