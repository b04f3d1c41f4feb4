package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-pool/driver"
	"github.com/agentkernel/agentkernel-pool/internal/nodeattr"
	"github.com/agentkernel/agentkernel-pool/internal/nomadtest"
)

// How a start is measured, the same way for every driver: the clock starts just
// before the job is registered through the API and stops when the first complete
// line of the task's stdout is in its log file on the host,
// <data_dir>/alloc/<alloc id>/alloc/logs/<task>.stdout.0, polled in a tight loop.
// That file is what `nomad alloc logs` serves, written by Nomad's logmon for
// every driver alike. Polling it rather than following the logs API keeps Nomad's
// log streaming (which frames and batches output) out of the figures, so the
// resolution is the polling interval. The allocation's id comes from a blocking
// query on the job's allocations, which answers when the scheduler places it,
// before the client has started it, so it is off the critical path.

// startSample is one job start, every duration counted from registration.
type startSample struct {
	jobID    string
	allocID  string
	first    time.Duration // first stdout line in the task's log file
	received time.Duration // the client's Received task event
	started  time.Duration // the Started task event
	claim    time.Duration // claim latency the driver reported (agentkernel-pool only)
	hit      bool          // a warm hit (agentkernel-pool only)
	sandbox  string        // short id of the claimed sandbox (agentkernel-pool only)
	exit     int
	dead     bool
	stdout   string // at least the first line
	events   string
}

// registerAndWaitLine registers job and returns once task's first stdout line is
// in its log file; the sample then holds the job, the allocation and first.
func registerAndWaitLine(ctx context.Context, a *nomadtest.Agent, job *api.Job, poll time.Duration) (startSample, time.Time, error) {
	s := startSample{jobID: *job.ID}
	task := job.TaskGroups[0].Tasks[0].Name
	begin := time.Now()
	resp, _, err := a.Client.Jobs().Register(job, (&api.WriteOptions{}).WithContext(ctx))
	if err != nil {
		return s, begin, fmt.Errorf("register job %s: %w", s.jobID, err)
	}
	if s.allocID, err = waitAllocID(ctx, a.Client, s.jobID, resp.JobModifyIndex); err != nil {
		return s, begin, err
	}
	path := logPath(a, s.allocID, task)
	tick := time.NewTicker(poll)
	defer tick.Stop()
	for {
		if fi, err := os.Stat(path); err == nil && fi.Size() > 0 {
			if b, err := os.ReadFile(path); err == nil && bytes.IndexByte(b, '\n') >= 0 {
				s.first = time.Since(begin)
				s.stdout = string(b) // the client may collect the alloc dir soon after the task ends
				return s, begin, nil
			}
		}
		select {
		case <-ctx.Done():
			return s, begin, fmt.Errorf("no stdout line from job %s (alloc %s) in %s: %w", s.jobID, s.allocID, path, ctx.Err())
		case <-tick.C:
		}
	}
}

func logPath(a *nomadtest.Agent, allocID, task string) string {
	return filepath.Join(a.DataDir, "alloc", allocID, "alloc", "logs", task+".stdout.0")
}

// waitAllocID blocks until the job has an allocation and returns its id.
func waitAllocID(ctx context.Context, c *api.Client, jobID string, index uint64) (string, error) {
	for {
		allocs, meta, err := c.Jobs().Allocations(jobID, true, (&api.QueryOptions{WaitIndex: index, WaitTime: 10 * time.Second}).WithContext(ctx))
		if err != nil {
			return "", fmt.Errorf("allocations of job %s: %w", jobID, err)
		}
		if len(allocs) > 0 {
			return allocs[0].ID, nil
		}
		index = max(index, meta.LastIndex)
	}
}

var (
	claimRe = regexp.MustCompile(`^Claimed warm sandbox (\S+) from pool \S+ in (\S+)$`)
	missRe  = regexp.MustCompile(`^Pool \S+ miss: started a sandbox cold and waited (\S+) for (\S+)$`)
)

// finishSample waits for the task to end and fills in the sample from its task
// events and its whole stdout.
func finishSample(ctx context.Context, a *nomadtest.Agent, s *startSample, begin time.Time, task string) error {
	var index uint64
	for {
		al, meta, err := a.Client.Allocations().Info(s.allocID, (&api.QueryOptions{WaitIndex: index, WaitTime: 10 * time.Second}).WithContext(ctx))
		if err != nil {
			return fmt.Errorf("read alloc %s of job %s: %w", s.allocID, s.jobID, err)
		}
		index = meta.LastIndex
		ts := al.TaskStates[task]
		if ts == nil || ts.State != "dead" {
			continue
		}
		s.dead = true
		s.exit, _ = exitCode(ts)
		s.events = events(ts)
		at := func(e *api.TaskEvent) time.Duration { return time.Unix(0, e.Time).Sub(begin) }
		for _, e := range ts.Events {
			switch e.Type {
			case api.TaskReceived:
				s.received = at(e)
			case api.TaskStarted:
				s.started = at(e)
			case api.TaskDriverMessage:
				msg := cmp(e.DriverMessage, e.DisplayMessage)
				if m := claimRe.FindStringSubmatch(msg); m != nil {
					s.hit, s.sandbox = true, m[1]
					s.claim, _ = time.ParseDuration(m[2])
				} else if m := missRe.FindStringSubmatch(msg); m != nil {
					s.sandbox = m[2]
					s.claim, _ = time.ParseDuration(m[1])
				}
			}
		}
		if out, err := os.ReadFile(logPath(a, s.allocID, task)); err == nil && len(out) > len(s.stdout) {
			s.stdout = string(out)
		}
		return nil
	}
}

func cmp(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// benchJob parses a jobspec from e2e/jobs and gives it id.
func benchJob(tb testing.TB, a *nomadtest.Agent, file, id string) *api.Job {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("jobs", file))
	if err != nil {
		tb.Fatal(err)
	}
	job, err := a.Client.Jobs().ParseHCLOpts(&api.JobsParseRequest{JobHCL: string(b), Canonicalize: true})
	if err != nil {
		tb.Fatalf("parse %s: %v", file, err)
	}
	job.ID, job.Name = new(id), new(id)
	return job
}

// directJob turns a pool's warm template into an ordinary batch job whose task
// runs command instead of waiting to be claimed: the same driver, config and
// resources, started cold. Restarts and reschedules are off.
func directJob(tb testing.TB, a *nomadtest.Agent, template, id string, command string, args ...string) *api.Job {
	tb.Helper()
	b, err := os.ReadFile(template)
	if err != nil {
		tb.Fatal(err)
	}
	job, err := a.Client.Jobs().ParseHCLOpts(&api.JobsParseRequest{JobHCL: string(b)})
	if err != nil {
		tb.Fatalf("parse %s: %v", template, err)
	}
	job.ID, job.Name, job.Type = new(id), new(id), new(api.JobTypeBatch)
	job.Canonicalize() // as a batch job: no update or migrate blocks
	g := job.TaskGroups[0]
	g.RestartPolicy.Attempts, g.RestartPolicy.Mode = new(0), new(api.RestartPolicyModeFail)
	g.ReschedulePolicy.Attempts, g.ReschedulePolicy.Unlimited = new(0), new(false)
	g.Tasks[0].Config["command"] = command
	g.Tasks[0].Config["args"] = args
	return job
}

func purgeJob(tb testing.TB, a *nomadtest.Agent, id string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, _, err := a.Client.Jobs().Deregister(id, true, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		tb.Fatalf("purge job %s: %v", id, err)
	}
}

// settle waits until pool (if any) has want warm allocations and no allocation
// is pending or stopping, collects terminal allocations on the client (exec
// chroots are torn down then) and rests a second, so a run starts on a quiet node.
// It reports whether the machine's CPUs were idle then (see waitIdleCPU).
func settle(tb testing.TB, a *nomadtest.Agent, pool string, want int) bool {
	tb.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	key := nodeattr.Pool(pool, nodeattr.Warm)
	var why string
	for time.Now().Before(deadline) {
		why = busy(a, key, want, pool != "")
		if why == "" {
			// The client answers with an empty body, which the api package reads as EOF.
			if err := a.Client.Nodes().GC(a.NodeID, nil); err != nil && !errors.Is(err, io.EOF) {
				tb.Fatalf("client gc: %v", err)
			}
			time.Sleep(time.Second)
			return waitIdleCPU(30 * time.Second)
		}
		time.Sleep(200 * time.Millisecond)
	}
	tb.Fatalf("node not quiet after 3m: %s", why)
	return false
}

func busy(a *nomadtest.Agent, key string, want int, checkPool bool) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if checkPool {
		n, err := a.Node(ctx)
		if err != nil {
			return err.Error()
		}
		if got := n.Attributes[key]; got != strconv.Itoa(want) {
			return fmt.Sprintf("%s = %q, want %d", key, got, want)
		}
	}
	allocs, _, err := a.Client.Allocations().List((&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return err.Error()
	}
	for _, al := range allocs {
		if al.ClientStatus == api.AllocClientStatusPending ||
			(al.ClientStatus == api.AllocClientStatusRunning && al.DesiredStatus != api.AllocDesiredStatusRun) {
			return fmt.Sprintf("alloc %s of job %s is %s/%s", al.ID[:8], al.JobID, al.ClientStatus, al.DesiredStatus)
		}
	}
	return ""
}

// waitIdleCPU waits, at most max, until the machine's CPUs were at least 70% idle
// over a quarter second: on a shared machine a run then starts while nothing else
// is busy (on a dedicated one this returns at once). It reports whether they were.
func waitIdleCPU(max time.Duration) bool {
	deadline := time.Now().Add(max)
	for {
		idle0, total0 := cpuTimes()
		time.Sleep(250 * time.Millisecond)
		idle1, total1 := cpuTimes()
		if total1 > total0 && float64(idle1-idle0)/float64(total1-total0) >= 0.7 {
			return true
		}
		if total1 <= total0 || time.Now().After(deadline) {
			return false
		}
	}
}

// cpuTimes reads the idle (idle + iowait) and total jiffies of all CPUs.
func cpuTimes() (idle, total uint64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	for i, f := range strings.Fields(line)[1:] {
		v, _ := strconv.ParseUint(f, 10, 64)
		if i < 8 { // guest time is already in user
			total += v
		}
		if i == 3 || i == 4 {
			idle += v
		}
	}
	return idle, total
}

// pct is the p-th percentile (nearest rank from below, as reportPercentiles).
func pct(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(p*float64(len(s))))]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// rssKiB is a process's resident set (VmRSS) in KiB, 0 when it is gone.
func rssKiB(pid int) int64 { return procKiB(pid, "status", "VmRSS:") }

// pssKiB is a process's proportional set size in KiB: its private pages plus
// its share of pages mapped by several processes (the shippers share this
// binary's text). 0 when it is gone.
func pssKiB(pid int) int64 { return procKiB(pid, "smaps_rollup", "Pss:") }

// procKiB reads the "<key> <n> kB" line of /proc/<pid>/<file>.
func procKiB(pid int, file, key string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, file))
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, key); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

// pluginRSS is the plugin process's resident set in MiB (summed, should Nomad
// run more than one).
func pluginRSS(tb testing.TB, a *nomadtest.Agent) float64 {
	tb.Helper()
	pids := a.Processes(driver.Name)
	if len(pids) == 0 {
		tb.Fatal("no plugin process found")
	}
	var kib int64
	for _, p := range pids {
		kib += rssKiB(p)
	}
	return float64(kib) / 1024
}

// helpers lists the plugin's detached helpers running command (the output
// shippers, shipper.ShipCommand, or the log holders, shipper.HoldCommand) for this
// agent: processes of the plugin binary outside the agent's group naming the
// command and the agent's data dir.
func helpers(a *nomadtest.Agent, command string) []int {
	inGroup := map[int]bool{}
	for _, p := range a.Processes(driver.Name) {
		inGroup[p] = true
	}
	var out []int
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil || inGroup[pid] {
			continue
		}
		exe, err := os.Readlink(d + "/exe")
		if err != nil || filepath.Base(exe) != driver.Name {
			continue
		}
		if cl, err := os.ReadFile(d + "/cmdline"); err == nil && bytes.Contains(cl, []byte(a.DataDir+"/")) &&
			bytes.Contains(cl, []byte("\x00"+command+"\x00")) {
			out = append(out, pid)
		}
	}
	return out
}
