package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-pool/driver/shipper"
	"github.com/agentkernel/agentkernel-pool/internal/nomadtest"
)

// TestSoak runs sandbox tasks the way an agent platform does, in bursts of 30
// jobs registered at once, on raw_exec, exec (as root, in slimChroot) and
// docker with gVisor (where dockerd runs), each against a pool of 4 (max 40,
// claim_timeout 5m). Each burst mixes commands that exit at once, print
// 5,000 lines, exit non-zero, and are stopped mid-run. It fails
// when a command's exit is not reported within 30 s (its Terminated event
// after its exit record in the sandbox), a stop does not end the command
// within kill_timeout and 30 s, a task loses output in `nomad alloc logs`,
// reports a wrong exit code, needed the plugin's watchdog to end, or got no
// sandbox within claim_timeout; and when, after the soak, a claim record, a
// sandbox beyond the pool's target, a process of a run, a helper or plugin
// goroutines are left. It prints the counts; for a task that hangs it prints
// what the plugin knows of it (SIGUSR1, Driver.LogState) and what the host
// shows of its run. What it times is the plugin's part: Nomad's own delays
// (placing, starting logmon, processing a stop) on a loaded machine are not.
//
// SOAK_TASKS sets the raw_exec tasks (default 60: two bursts), SOAK_EXEC_TASKS
// the exec ones (default 30), SOAK_RUNSC_TASKS the gVisor ones (default 30);
// `make soak` runs a thousand and more.
func TestSoak(t *testing.T) {
	if _, err := nomadtest.Binary(); err != nil {
		t.Skipf("skipping e2e: %v", err)
	}
	runtimes := []struct {
		name, env string
		template  func(t *testing.T) string // the pool's template file
	}{
		{"raw_exec", "SOAK_TASKS", func(t *testing.T) string { return "../example/pools/raw_exec.nomad.hcl" }},
		{"exec", "SOAK_EXEC_TASKS", func(t *testing.T) string { return "../example/pools/exec.nomad.hcl" }},
		{"runsc", "SOAK_RUNSC_TASKS", func(t *testing.T) string { return dockerTemplate(t, "runsc", "") }},
	}
	for _, rt := range runtimes {
		t.Run(rt.name, func(t *testing.T) {
			n := soakCount(rt.env, map[string]int{"raw_exec": 60, "exec": 30, "runsc": 30}[rt.name])
			if n == 0 {
				t.Skipf("skipping: %s=0", rt.env)
			}
			var client, extra string
			switch rt.name {
			case "exec":
				if os.Geteuid() != 0 {
					t.Skip("skipping: the exec driver needs root")
				}
				client = slimChroot
			case "runsc":
				if why := dockerReady(); why != "" {
					t.Skipf("skipping docker soak: %s", why)
				}
				ensureImage(t)
				extra = dockerPluginConfig
			}
			soak(t, soakTemplate(t, rt.template(t)), client, extra, n)
		})
	}
}

// soakTemplate is the pool template at path with the raw_exec one's small
// resources, so that 40 sandboxes and 30 tasks fit a small node's CPU.
func soakTemplate(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	hcl := regexp.MustCompile(`cpu\s*=\s*\d+`).ReplaceAllString(string(b), "cpu    = 20")
	hcl = regexp.MustCompile(`memory\s*=\s*\d+`).ReplaceAllString(hcl, "memory = 64")
	p := filepath.Join(t.TempDir(), "soak-"+filepath.Base(path))
	if err := os.WriteFile(p, []byte(hcl), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const (
	soakPool = "soak"
	soakSize = 4
	soakMax  = 40
	// soakBurst is the jobs registered at once, on every runtime.
	soakBurst = 30
	// soakClaimTimeout is sized for a burst's misses, started all at once
	// (on 2 cores Nomad took 25-40 s per exec sandbox in its default
	// chroot under the soak's load, and opening launch sessions, 4 at a
	// time, a median 12 s more).
	// What the soak looks for is hangs, lost output and leaks; a start
	// with no sandbox within this is still a failure.
	soakClaimTimeout = 5 * time.Minute
	// soakBound is how long a command's exit may take to be reported, and
	// a stop to end the command beyond its kill_timeout.
	soakBound = 30 * time.Second
	// soakKillTimeout is the jobs' kill_timeout (Nomad's default).
	soakKillTimeout = 5 * time.Second
	// soakStartBound is how long a task may go without its command's exit
	// record from its registration: the claim's timeout and a slow start.
	soakStartBound = soakClaimTimeout + 90*time.Second
)

func soakCount(env string, def int) int {
	if v := os.Getenv(env); v != "" {
		n, err := strconv.Atoi(v)
		if err == nil && n >= 0 {
			return n
		}
	}
	return def
}

// soakResult is what came of one task.
type soakResult struct {
	job, alloc, kind string
	hung             string // why it counts as hung, or ""
	noSandbox        string // the start got no sandbox within claim_timeout
	watchdog         bool   // the plugin's watchdog ended it
	lost, wrongCode  string
	took             time.Duration // from its command's exit to its report
}

// soakPoolBlock is the soak's pool: poolBlock's with soakClaimTimeout.
func soakPoolBlock(template string) string {
	return strings.Replace(poolBlock(soakPool, template, soakSize, soakMax), `claim_timeout = "60s"`, `claim_timeout = "`+soakClaimTimeout.String()+`"`, 1)
}

// soak runs n tasks on an agent with a pool of template (and the client
// config client, the agent config extra), in bursts of soakBurst.
func soak(t *testing.T, template, client, extra string, n int) {
	// Every wait for a helper's exit starts 200 ms late (a failpoint): an
	// exit in that window was once missed for good, and the task hung.
	t.Setenv(shipper.SlowPidWaitEnv, "1") // the agent passes its env to the plugin
	// The client keeps terminal allocations (by default it collects them
	// beyond 50), so each task's logs can be read once it is dead. The
	// test's own API calls (a blocking query per task in flight, log reads)
	// come from the plugin's address, 127.0.0.1, and with the plugin's
	// launch sessions reached Nomad's 100 connections per address (429s
	// to the plugin's watches); on a node the plugin does not share it
	// with a harness of 30 watchers, so here it is raised
	// (TestConnectionsDoNotGrowWithTasks checks the plugin's own use).
	a := nomadtest.Start(t, nomadtest.Options{PluginDir: nomadtest.BuildPlugin(t), PluginConfig: soakPoolBlock(template),
		ExtraConfig: "client {\n  gc_max_allocs = 5000\n" + client + "}\nlimits {\n  http_max_conns_per_client = 400\n}\n" + extra})
	soakWaitWarm(t, a)
	before := pluginGoroutines(t, a)
	begin := time.Now()
	var all []soakResult
	for b := 0; len(all) < n; b++ {
		size := min(soakBurst, n-len(all))
		res := soakBurstRun(t, a, b, size)
		all = append(all, res...)
		t.Logf("burst %d: %d tasks, %s", b, size, soakCounts(res))
	}
	t.Logf("soak of %d tasks in %s: %s", len(all), time.Since(begin).Round(time.Second), soakCounts(all))
	for _, r := range all {
		switch {
		case r.hung != "":
			t.Errorf("job %s (alloc %s, %s) hung: %s", r.job, r.alloc, r.kind, r.hung)
		case r.watchdog:
			t.Errorf("job %s (alloc %s, %s) was ended by the plugin's watchdog", r.job, r.alloc, r.kind)
		case r.noSandbox != "":
			t.Errorf("job %s (alloc %s, %s) never ran: %s", r.job, r.alloc, r.kind, r.noSandbox)
			continue
		}
		if r.lost != "" {
			t.Errorf("job %s (alloc %s, %s) lost output: %s", r.job, r.alloc, r.kind, r.lost)
		}
		if r.wrongCode != "" {
			t.Errorf("job %s (alloc %s, %s): %s", r.job, r.alloc, r.kind, r.wrongCode)
		}
	}
	soakLeaks(t, a, before)
	// A dev agent destroys its allocations when it stops, and may take
	// longer than the harness waits with 40 containers: nothing of them may
	// outlive the test either.
	a.Stop()
	if dockerReady() != "" {
		return // no docker daemon: no container to leave
	}
	ids, err := a.Containers()
	if err != nil {
		t.Errorf("docker containers of the stopped agent: %v", err)
	}
	if len(ids) > 0 {
		t.Errorf("%d docker containers of the stopped agent left: %v", len(ids), ids)
	}
}

// soakCounts sums results up in one line.
func soakCounts(rs []soakResult) string {
	var hung, none, dog, lost, wrong int
	var slowest time.Duration
	for _, r := range rs {
		if r.hung != "" {
			hung++
		}
		if r.noSandbox != "" {
			none++
		}
		if r.watchdog {
			dog++
		}
		if r.lost != "" {
			lost++
		}
		if r.wrongCode != "" {
			wrong++
		}
		slowest = max(slowest, r.took)
	}
	return fmt.Sprintf("%d hung, %d ended by the watchdog, %d lost output, %d wrong exit codes, %d without a sandbox within claim_timeout; slowest exit to report %s",
		hung, dog, lost, wrong, none, slowest.Round(time.Millisecond))
}

// soakBurstRun registers size jobs at once, follows each to its end, and
// purges them.
func soakBurstRun(t *testing.T, a *nomadtest.Agent, b, size int) []soakResult {
	jobs := make([]*api.Job, size)
	for i := range jobs {
		k := kindOf(i)
		id := fmt.Sprintf("soak-%03d-%02d-%s", b, i, k.name)
		num := b*soakBurst + i
		script := fmt.Sprintf(k.script, num)
		jobs[i] = benchJob(t, a, "command.nomad.hcl", id)
		task := jobs[i].TaskGroups[0].Tasks[0]
		task.Config["pool"], task.Config["args"] = soakPool, []string{"-c", script}
	}
	res := make([]soakResult, size)
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for i, job := range jobs {
		wg.Go(func() {
			<-gate
			k := kindOf(i)
			res[i] = soakOne(t, a, job, k, b*soakBurst+i)
		})
	}
	close(gate)
	wg.Wait()
	for _, job := range jobs {
		purgeJob(t, a, *job.ID)
	}
	return res
}

// soakOne runs one job to its end and judges it.
func soakOne(t *testing.T, a *nomadtest.Agent, job *api.Job, k soakKind, num int) soakResult {
	r := soakResult{job: *job.ID, kind: k.name}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	registered := time.Now()
	resp, _, err := a.Client.Jobs().Register(job, (&api.WriteOptions{}).WithContext(ctx))
	if err != nil {
		r.hung = "register: " + err.Error()
		return r
	}
	if r.alloc, err = waitAllocID(ctx, a.Client, r.job, resp.JobModifyIndex); err != nil {
		r.hung = err.Error()
		return r
	}
	w := &soakWatch{a: a, job: r.job, alloc: r.alloc, registered: registered}
	ts, err := w.untilDead(ctx, k.code < 0)
	r.took = w.took
	if err == nil && r.took > soakBound {
		err = fmt.Errorf("exit reported %s after the command's exit", r.took.Round(time.Millisecond))
	}
	if err != nil {
		r.hung = err.Error()
		t.Logf("HANG of job %s (alloc %s, %s): %v\n%s", r.job, r.alloc, k.name, err, w.dumped)
		if ts == nil {
			return r
		}
	}
	for _, e := range ts.Events {
		if msg := cmp(e.DriverMessage, e.DisplayMessage); strings.HasPrefix(msg, "No sandbox from pool") {
			r.noSandbox = msg // the machine too loaded to start sandboxes in time: said, not hung
			return r
		}
		if strings.HasPrefix(cmp(e.DriverMessage, e.DisplayMessage), "Watchdog:") {
			r.watchdog = true
			t.Logf("job %s (alloc %s): %s", r.job, r.alloc, cmp(e.DriverMessage, e.DisplayMessage))
		}
	}
	code, ok := exitCode(ts)
	want := k.code
	if k.name == "fail" {
		want = 1 + num%3
	}
	switch {
	case !ok:
		r.wrongCode = "no Terminated event; events:\n" + events(ts)
	case want >= 0 && code != want:
		r.wrongCode = fmt.Sprintf("exit code %d, want %d; events:\n%s", code, want, events(ts))
	}
	out, err := soakLogs(a, r.alloc)
	switch {
	case err != nil:
		r.lost = err.Error()
	case k.check != nil:
		if err := k.check(out, num); err != nil {
			r.lost = err.Error()
		}
	case k.name == "fail" && out != fmt.Sprintf("n=%d\n", num):
		r.lost = fmt.Sprintf("stdout %q", out)
	}
	return r
}

// soakLogs is the task's stdout as `nomad alloc logs` shows it: the same
// logs API the CLI reads, without starting a CLI per task.
func soakLogs(a *nomadtest.Agent, allocID string) (string, error) {
	cancel := make(chan struct{})
	defer close(cancel)
	ctx, stop := context.WithTimeout(context.Background(), 60*time.Second)
	defer stop()
	frames, errs := a.Client.AllocFS().Logs(&api.Allocation{ID: allocID, NodeID: a.NodeID}, false, "agent", "stdout", "start", 0,
		cancel, (&api.QueryOptions{}).WithContext(ctx))
	var out bytes.Buffer
	for {
		select {
		case f, ok := <-frames:
			if !ok {
				return out.String(), nil
			}
			out.Write(f.Data)
		case err := <-errs:
			if err != nil {
				return out.String(), fmt.Errorf("alloc logs: %w", err)
			}
		case <-ctx.Done():
			return out.String(), fmt.Errorf("alloc logs: %w", ctx.Err())
		}
	}
}
