package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-pool/internal/nomadtest"
)

// BenchmarkJobStart measures a sandbox job's start as a user sees it, from
// registration to the first line of its output (see bench_measure_test.go), for
// three jobs printing one line, interleaved in one run on one agent so their
// ratios are meaningful:
//
//   - pool: an agentkernel-pool task on a warm pool of example/pools/exec.nomad.hcl
//     (every run a warm hit: the pool refills between runs);
//   - exec: that same template run directly as a batch job, cold;
//   - raw: example/pools/raw_exec.nomad.hcl run directly, the floor (Nomad placing
//     the cheapest task).
//
// BENCH_RUNS sets the runs per job (default 20; fewer than 10 only to try the harness).
// Run it with -benchtime 1x:
//
//	NOMAD_BIN=/work/bin/nomad go test ./e2e -run '^$' -bench JobStart -benchtime 1x
func BenchmarkJobStart(b *testing.B) {
	if _, err := nomadtest.Binary(); err != nil {
		b.Skipf("skipping: %v", err)
	}
	if os.Geteuid() != 0 {
		b.Skip("skipping: the exec driver needs root")
	}
	execTmpl, err := filepath.Abs("../example/pools/exec.nomad.hcl")
	if err != nil {
		b.Fatal(err)
	}
	rawTmpl, err := filepath.Abs("../example/pools/raw_exec.nomad.hcl")
	if err != nil {
		b.Fatal(err)
	}
	const pool, size = "iso", 2
	a := nomadtest.Start(b, nomadtest.Options{PluginDir: nomadtest.BuildPlugin(b), PluginConfig: poolBlock(pool, execTmpl, size, 2*size)})
	settle(b, a, pool, size)

	p50 := compareStarts(b, a, pool, size, []startVariant{
		{"pool", func(id string) *api.Job { return benchJob(b, a, "bench-pool.nomad.hcl", id) }},
		{"exec", func(id string) *api.Job { return directJob(b, a, execTmpl, id, "/bin/echo", "first line") }},
		{"raw", func(id string) *api.Job { return directJob(b, a, rawTmpl, id, "/bin/echo", "first line") }},
	})
	b.ReportMetric(float64(p50["exec"])/float64(p50["pool"]), "exec/pool-x")
	b.ReportMetric(float64(p50["pool"])/float64(p50["raw"]), "pool/raw-x")
}

// BenchmarkJobStartGVisor is BenchmarkJobStart for the isolation agents should
// run under: a warm pool of example/pools/docker-gvisor.nomad.hcl (docker with
// runsc) against that same template started cold, and the raw_exec floor, all
// running the same command (a container that exits within milliseconds can
// lose its output in Nomad's docker log collection, so it lingers a second).
// Skipped without a docker daemon with runsc.
func BenchmarkJobStartGVisor(b *testing.B) {
	if _, err := nomadtest.Binary(); err != nil {
		b.Skipf("skipping: %v", err)
	}
	if why := dockerReady(); why != "" {
		b.Skipf("skipping: %s", why)
	}
	ensureImage(b)
	rawTmpl, err := filepath.Abs("../example/pools/raw_exec.nomad.hcl")
	if err != nil {
		b.Fatal(err)
	}
	gvTmpl := dockerTemplate(b, "runsc", "")
	const pool, size = "gv", 2
	a := nomadtest.Start(b, nomadtest.Options{PluginDir: nomadtest.BuildPlugin(b), PluginConfig: poolBlock(pool, gvTmpl, size, 2*size),
		ExtraConfig: dockerPluginConfig})
	settle(b, a, pool, size)
	script := []string{"-c", "echo first line; sleep 1"}
	p50 := compareStarts(b, a, pool, size, []startVariant{
		{"gvisor-pool", func(id string) *api.Job {
			job := benchJob(b, a, "bench-pool.nomad.hcl", id)
			t := job.TaskGroups[0].Tasks[0]
			t.Config["pool"], t.Config["command"], t.Config["args"] = pool, "/bin/sh", script
			return job
		}},
		{"gvisor-cold", func(id string) *api.Job { return directJob(b, a, gvTmpl, id, "/bin/sh", script...) }},
		{"gvisor-floor", func(id string) *api.Job { return directJob(b, a, rawTmpl, id, "/bin/sh", script...) }},
	})
	b.ReportMetric(float64(p50["gvisor-cold"])/float64(p50["gvisor-pool"]), "cold/pool-x")
	b.ReportMetric(float64(p50["gvisor-pool"])/float64(p50["gvisor-floor"]), "pool/floor-x")
}

// startVariant is one kind of job whose start compareStarts times.
type startVariant struct {
	name string
	job  func(id string) *api.Job
}

// compareStarts times BENCH_RUNS starts of each variant, interleaved and
// rotated on one agent, with pool settled at size warm before each, and
// reports each variant's figures; it returns their median starts. The
// variant named "pool" or ending in "-pool" is the pool's: its claims and
// hits are reported too.
func compareStarts(b *testing.B, a *nomadtest.Agent, pool string, size int, variants []startVariant) map[string]time.Duration {
	runs := benchRuns()
	samples := map[string][]startSample{}
	busy := 0 // runs started while something else kept the CPUs busy
	b.ResetTimer()
	for i := range runs {
		for k := range variants {
			v := variants[(i+k)%len(variants)] // rotate, so no job always runs first
			b.StopTimer()
			job := v.job(fmt.Sprintf("bench-%s-%d", v.name, i))
			if !settle(b, a, pool, size) {
				busy++
			}
			b.StartTimer()
			s := timeStart(b, a, job, time.Millisecond)
			b.StopTimer()
			purgeJob(b, a, *job.ID)
			b.StartTimer()
			samples[v.name] = append(samples[v.name], s)
		}
	}
	b.StopTimer()

	p50 := map[string]time.Duration{}
	for _, v := range variants {
		ss := samples[v.name]
		first := collect(ss, func(s startSample) time.Duration { return s.first })
		p50[v.name] = pct(first, 0.5)
		// One line per job (go test keeps 10 lines of a benchmark's log).
		b.Logf("per-run %s, ms in run order: first line %s; Received→Started %s; Started→first line %s", v.name, msList(first),
			msList(collect(ss, func(s startSample) time.Duration { return s.started - s.received })),
			msList(collect(ss, func(s startSample) time.Duration { return s.first - s.started })))
		b.ReportMetric(ms(pct(first, 0.5)), v.name+"-p50-ms")
		b.ReportMetric(ms(pct(first, 0.9)), v.name+"-p90-ms")
		// Where the time goes, medians of each run's phases: registration to the
		// client's Received event, Received to Started, Started to the first line.
		b.ReportMetric(ms(pct(collect(ss, func(s startSample) time.Duration { return s.received }), 0.5)), v.name+"-received-ms")
		b.ReportMetric(ms(pct(collect(ss, func(s startSample) time.Duration { return s.started - s.received }), 0.5)), v.name+"-setup-ms")
		b.ReportMetric(ms(pct(collect(ss, func(s startSample) time.Duration { return s.first - s.started }), 0.5)), v.name+"-output-ms")
		if v.name != "pool" && !strings.HasSuffix(v.name, "-pool") {
			continue
		}
		hits := 0
		for _, s := range ss {
			if s.hit {
				hits++
			}
		}
		b.ReportMetric(ms(pct(collect(ss, func(s startSample) time.Duration { return s.claim }), 0.5)), v.name+"-claim-ms")
		b.ReportMetric(float64(hits), v.name+"-hits")
	}
	b.ReportMetric(float64(runs), "runs")
	b.ReportMetric(float64(busy), "busy-starts")
	return p50
}

// timeStart runs one job to its end and returns its sample; any failure ends the
// benchmark with the job's task events.
func timeStart(b *testing.B, a *nomadtest.Agent, job *api.Job, poll time.Duration) startSample {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s, begin, err := registerAndWaitLine(ctx, a, job, poll)
	b.StopTimer()
	defer b.StartTimer()
	if err == nil {
		err = finishSample(ctx, a, &s, begin, job.TaskGroups[0].Tasks[0].Name)
	}
	if err != nil {
		b.Fatalf("job %s: %v", *job.ID, err)
	}
	if s.exit != 0 {
		b.Fatalf("job %s exited %d; stdout %q; events:\n%s", *job.ID, s.exit, s.stdout, s.events)
	}
	return s
}

func msList(d []time.Duration) string {
	f := make([]string, len(d))
	for i, x := range d {
		f[i] = strconv.FormatFloat(ms(x), 'f', 0, 64)
	}
	return strings.Join(f, " ")
}

func collect(ss []startSample, f func(startSample) time.Duration) []time.Duration {
	out := make([]time.Duration, 0, len(ss))
	for _, s := range ss {
		out = append(out, f(s))
	}
	return out
}

// benchRuns is BENCH_RUNS, else 20.
func benchRuns() int {
	if n, err := strconv.Atoi(os.Getenv("BENCH_RUNS")); err == nil && n > 0 {
		return n
	}
	return 20
}
