// Command benchreport turns `go test -bench` output from make bench into
// BENCHMARKS.md: the machine, the Nomad version, the date, and a table per
// benchmark. It prints the markdown and writes it to -o.
//
//	go run ./e2e/benchreport -o BENCHMARKS.md -nomad "$NOMAD_BIN" build/bench/*.txt
package main

import (
	"bytes"
	"flag"
	"fmt"
	"maps"
	"math"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

func main() {
	out := flag.String("o", "BENCHMARKS.md", "markdown file to write")
	nomad := flag.String("nomad", envOr("NOMAD_BIN", "nomad"), "nomad binary, for its version")
	notesFile := flag.String("notes", "", "markdown file whose text goes under the header (what to know about the machine)")
	flag.Parse()
	var notes []byte
	if *notesFile != "" {
		var err error
		if notes, err = os.ReadFile(*notesFile); err != nil {
			fmt.Fprintf(os.Stderr, "benchreport: -notes: %v\n", err)
			os.Exit(1)
		}
	}
	r := results{metrics: map[string]map[string]float64{}}
	for _, f := range flag.Args() {
		if err := r.parseFile(f); err != nil {
			fmt.Fprintf(os.Stderr, "benchreport: %v\n", err)
			os.Exit(1)
		}
	}
	md := render(&r, *nomad, string(notes))
	fmt.Print(md)
	if err := os.WriteFile(*out, []byte(md), 0o644); err != nil {
		fmt.Fprintf(os.Stderr, "benchreport: %v\n", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "benchreport: wrote %s\n", *out)
}

// expected are the benchmarks make bench runs; a missing one is listed as not run
// (go test prints nothing for a skipped benchmark without -v).
var expected = []string{"BenchmarkJobStart", "BenchmarkJobStartGVisor", "BenchmarkJobStartPrepared", "BenchmarkStorm", "BenchmarkStepLoad", "BenchmarkClusterBurst", "BenchmarkIdleTasks", "BenchmarkClaim", "BenchmarkStartTaskWarm", "BenchmarkMetricsOverhead"}

func render(r *results, nomad, notes string) string {
	var b strings.Builder
	w := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	w("# Benchmarks\n\n")
	w("Written by `make bench` (`go run ./e2e/benchreport`) on %s against a real Nomad agent\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	w("on loopback that loads the freshly built plugin. Figures are from one run on this machine.\n\n")
	w("| | |\n|---|---|\n")
	w("| machine | %d cores, %s, %s |\n", runtime.NumCPU(), memTotal(), cpuModel())
	w("| kernel | %s |\n", strings.TrimSpace(run("uname", "-sr")))
	w("| Nomad | %s |\n", firstLine(run(nomad, "version")))
	w("| Go | %s |\n", runtime.Version())
	w("| commit | %s |\n\n", commit())
	if notes = strings.TrimSpace(notes); notes != "" {
		w("%s\n\n", notes)
	}

	var execRuns, gvisorRuns []string
	for _, l := range r.perRun {
		switch {
		case strings.HasPrefix(l, "prepared-"): // BenchmarkJobStartPrepared: its metrics are in the table of others
		case strings.HasPrefix(l, "gvisor-"):
			gvisorRuns = append(gvisorRuns, l)
		default:
			execRuns = append(execRuns, l)
		}
	}
	if m := r.metrics["BenchmarkJobStart"]; m != nil {
		jobStart(w, m, execRuns)
	}
	if m := r.metrics["BenchmarkJobStartGVisor"]; m != nil {
		gvisorStart(w, m, gvisorRuns)
	}
	if m := r.metrics["BenchmarkStorm"]; m != nil {
		stormTables(w, m)
	}
	if m := r.metrics["BenchmarkStepLoad"]; m != nil {
		stepLoad(w, m)
	}
	clusterBurst(w, r)
	others(w, r)
	for _, e := range expected {
		if !r.has(e) && !slices.ContainsFunc(r.notRun, func(s string) bool { return strings.HasPrefix(s, e+" ") }) {
			r.notRun = append(r.notRun, e+": no result (skipped or failed: see its go test output under build/bench/)")
		}
	}
	if len(r.notRun) > 0 {
		w("## Not run\n\n")
		for _, s := range r.notRun {
			w("- %s\n", s)
		}
		w("\n")
	}
	return b.String()
}

func jobStart(w func(string, ...any), m map[string]float64, perRun []string) {
	w("## Sandbox job start: registration to first output line\n\n")
	w("%s runs of each job, interleaved on one agent. The clock starts before the job is registered\n", num(m["runs"]))
	w("through the API and stops when the task's first stdout line is in its log file on the host\n")
	w("(polled every 1 ms; the file `nomad alloc logs` serves). Where the time goes, medians of\n")
	w("each run's phases from the client's task events: registration to Received (placement),\n")
	w("Received to Started (task setup, logmon, driver StartTask), Started to the first line. Nomad's\n")
	w("logmon flushes its log buffer to the file every 100 ms, counted from its own start, for every driver:\n")
	w("a line lands at the first flush after it was written, so the figures move in steps of that tick\n")
	w("(agentkernel-pool's output reaches logmon about 12 ms after StartTask returns, then waits for the tick).\n\n")
	startRows(w, m, [][2]string{
		{"pool", "agentkernel-pool, warm `exec` template"},
		{"exec", "same template run directly with `exec` (cold)"},
		{"raw", "`raw_exec` job (the floor)"},
	})
	ratioExec, ratioRaw := m["exec/pool-x"], m["pool/raw-x"]
	w("\n| ratio (medians) | figure | goal | |\n|---|---:|---|---|\n")
	w("| exec / agentkernel-pool | %sx faster | at least 5x | %s |\n", num(ratioExec), met(ratioExec >= 5))
	w("| agentkernel-pool / raw_exec | %sx | at most 1.5x | %s |\n", num(ratioRaw), met(ratioRaw > 0 && ratioRaw <= 1.5))
	w("\nWarm hits: %s of %s pool runs; claim latency the driver reported (median): %s ms.\n",
		num(m["pool-hits"]), num(m["runs"]), num(m["pool-claim-ms"]))
	w("Each run starts once the node is quiet (pool refilled, nothing pending or stopping) and the\n")
	w("CPUs were 70%% idle for a quarter second, waiting at most 30 s: %s of %s runs started without that.\n\n",
		num(m["busy-starts"]), num(3*m["runs"]))
	if len(perRun) > 0 {
		w("Every run, in run order (runs rotate which job goes first):\n\n```\n%s\n```\n\n", strings.Join(perRun, "\n"))
	}
}

// logFlushMeanMs is the mean wait for Nomad's log collector (logmon), which
// flushes a task's log file every 100 ms.
const logFlushMeanMs = 50

func gvisorStart(w func(string, ...any), m map[string]float64, perRun []string) {
	w("## Sandbox job start under gVisor: registration to first output line\n\n")
	w("The same measure as above, for the isolation untrusted agent code should run under: %s runs each of\n", num(m["runs"]))
	w("a sandbox job on a warm pool of `example/pools/docker-gvisor.nomad.hcl` (docker with `runsc`), that\n")
	w("template started cold as a batch job, and a `raw_exec` job (the floor), all running `sh -c \"echo first\n")
	w("line; sleep 1\"` (a container exiting within milliseconds can lose its output in Nomad's docker log collection).\n\n")
	startRows(w, m, [][2]string{
		{"gvisor-pool", "agentkernel-pool, warm docker + `runsc` template"},
		{"gvisor-cold", "same template run directly (cold docker + `runsc`)"},
		{"gvisor-floor", "`raw_exec` job (the floor)"},
	})
	cold, floor := m["cold/pool-x"], m["pool/floor-x"]
	w("\n| ratio (medians) | figure | goal | |\n|---|---:|---|---|\n")
	w("| cold gVisor / agentkernel-pool gVisor | %sx faster | at least 5x | %s |\n", num(cold), met(cold >= 5))
	w("| agentkernel-pool gVisor / raw_exec | %sx | at most 1.5x | %s |\n", num(floor), met(floor > 0 && floor <= 1.5))
	w("\nWarm hits: %s of %s pool runs; claim latency the driver reported (median): %s ms.\n\n",
		num(m["gvisor-pool-hits"]), num(m["runs"]), num(m["gvisor-pool-claim-ms"]))
	// What Nomad spends on a pool task before and after the plugin's part:
	// placement and the client's task hooks up to Started (StartTask is a
	// few ms of it), and logmon's flush of the log file every 100 ms (half
	// of that on average).
	if nomad := m["gvisor-pool-received-ms"] + m["gvisor-pool-setup-ms"] + logFlushMeanMs; nomad > 0 {
		w("What bounds the first ratio here: before a pool task's command can run, Nomad spends %s ms (to Received, then its task hooks until Started; StartTask itself is a few ms of it), "+
			"and Nomad's log collector writes a line into the log file on a 100 ms tick (%s ms on average). A pool costing nothing after StartTask would show its first line after about %s ms: "+
			"%sx faster than the cold start, so the 5x goal is out of reach on this machine whatever the launch path does; the raw_exec floor itself is %sx faster than cold gVisor.\n\n",
			num(m["gvisor-pool-received-ms"]+m["gvisor-pool-setup-ms"]), num(logFlushMeanMs), num(nomad), num(m["gvisor-cold-p50-ms"]/nomad), num(m["gvisor-cold-p50-ms"]/max(m["gvisor-floor-p50-ms"], 1)))
	}
	if len(perRun) > 0 {
		w("Every run, in run order:\n\n```\n%s\n```\n\n", strings.Join(perRun, "\n"))
	}
}

// startRows is the table of job starts: per variant (metric key, label) its
// median and p90, and the medians of its phases.
func startRows(w func(string, ...any), m map[string]float64, rows [][2]string) {
	w("| job | median | p90 | to Received | Received to Started | Started to first line |\n|---|---:|---:|---:|---:|---:|\n")
	for _, v := range rows {
		k := v[0]
		w("| %s | %s ms | %s ms | %s ms | %s ms | %s ms |\n", v[1], num(m[k+"-p50-ms"]), num(m[k+"-p90-ms"]),
			num(m[k+"-received-ms"]), num(m[k+"-setup-ms"]), num(m[k+"-output-ms"]))
	}
}

func stormTables(w func(string, ...any), m map[string]float64) {
	w("## Storm: %s sandbox jobs registered at once, pool size 5, max 60\n\n", num(m["jobs"]))
	w("Template: `example/pools/raw_exec.nomad.hcl` (50 exec chroots at once would measure the\n")
	w("machine, not the pool). Each job prints its sandbox's alloc dir and sleeps 5 s, so all hold a\n")
	w("sandbox at once. Leftovers are counted 60 s after all jobs were purged.\n\n")
	w("| figure | value | goal | |\n|---|---:|---|---|\n")
	w("| jobs succeeded | %s of %s | all | %s |\n", num(m["succeeded"]), num(m["jobs"]), met(m["succeeded"] == m["jobs"]))
	w("| sandboxes claimed twice (task events and in-sandbox output) | %s | 0 | %s |\n", num(m["claimed-twice"]), met(m["claimed-twice"] == 0))
	w("| warm hits / pool misses | %s / %s | | |\n", num(m["warm-hits"]), num(m["jobs"]-m["warm-hits"]))
	w("| dispatched warm jobs left beyond the warm target | %s | 0 | %s |\n", num(m["jobs-beyond-target"]), met(m["jobs-beyond-target"] == 0))
	w("| live warm jobs left (target 5) | %s | 5 | %s |\n", num(m["warm-jobs-left"]), met(m["warm-jobs-left"] == 5))
	w("| claim records left | %s | 0 | %s |\n", num(m["claims-left"]), met(m["claims-left"] == 0))
	w("| start latency p50 / p99 | %s / %s ms | | |\n", num(m["start-p50-ms"]), num(m["start-p99-ms"]))
	w("| pool miss: wait for a cold sandbox, median | %s ms | | |\n", num(m["miss-wait-p50-ms"]))
	w("| same storm of plain `raw_exec` jobs: p50 / p99 (%s succeeded) | %s / %s ms | | |\n\n",
		num(m["raw-succeeded"]), num(m["raw-start-p50-ms"]), num(m["raw-start-p99-ms"]))
	w("A pool miss waits for a cold sandbox, which is a second Nomad task start (dispatch, placement,\n")
	w("logmon, executor) before the job's own command runs: with 45 misses the storm starts about twice\n")
	w("the tasks the plain `raw_exec` storm does, on the same cores.\n\n")
	w("## Plugin memory (VmRSS)\n\n| plugin process | RSS |\n|---|---:|\n")
	w("| idle, pool of 5 warm | %s MiB |\n", num(m["rss-idle-MiB"]))
	w("| storm peak, 50 tasks running | %s MiB |\n", num(m["rss-storm-MiB"]))
	w("| 60 s after the storm | %s MiB |\n", num(m["rss-after-MiB"]))
	if m["shippers"] > 0 {
		w("| output shippers at the peak (one detached process per running task), RSS | %s x %s MiB |\n",
			num(m["shippers"]), num(m["shipper-rss-MiB"]))
		if m["shipper-pss-MiB"] > 0 {
			w("| the same, PSS (the binary's pages are shared among them) | %s x %s MiB |\n",
				num(m["shippers"]), num(m["shipper-pss-MiB"]))
		}
	}
	w("\n")
}

func stepLoad(w func(string, ...any), m map[string]float64) {
	w("## Step load: a fixed pool against a demand-driven one\n\n")
	w("Poisson arrivals of sandbox jobs (%s in all, the same for both pools): 0.2/s for %s s, then 2/s for %s s,\n",
		num(m["arrivals"]), num(m["low-phase-s"]), num(m["high-phase-s"]))
	w("then idle. The template is `raw_exec` with an artifact served after 3 s, so a warm-up takes\n")
	w("seconds, as an image pull does; each job prints a line and holds its sandbox 2 s. Fixed: `size = 2`.\n")
	w("Demand-driven: `size = 2`, `max_warm = 12`, `scale_down_after = \"%ss\"`. Hit rate and claim wait\n", num(m["scale-down-after-s"]))
	w("count the 2/s phase after its first %s s; the warm-up is the plugin's own measure (/metrics);\n", num(m["skipped-s"]))
	w("back to size is from the last arrival until the pool's target and warm attributes are 2.\n\n")
	w("| figure | fixed | demand-driven | goal (demand-driven) | |\n|---|---:|---:|---|---|\n")
	w("| jobs (failed) | %s (%s) | %s (%s) | | |\n", num(m["fixed-jobs"]), num(m["fixed-failed"]), num(m["demand-jobs"]), num(m["demand-failed"]))
	w("| hit rate in the 2/s phase | %s%% | %s%% | at least 95%% | %s |\n", num(m["fixed-hit-%"]), num(m["demand-hit-%"]), met(m["demand-hit-%"] >= 95))
	w("| claim wait p50 | %s ms | %s ms | | |\n", num(m["fixed-wait-p50-ms"]), num(m["demand-wait-p50-ms"]))
	w("| claim wait p99 | %s ms | %s ms | at most one warm-up (%s ms) | %s |\n", num(m["fixed-wait-p99-ms"]), num(m["demand-wait-p99-ms"]),
		num(1000*m["demand-warmup-s"]), met(m["demand-wait-p99-ms"] <= 1000*m["demand-warmup-s"]))
	w("| warm-up, mean | %s s | %s s | | |\n", num(m["fixed-warmup-s"]), num(m["demand-warmup-s"]))
	w("| back to size after the last arrival | %s s | %s s | within scale_down_after + 60 s (%s s) | %s |\n\n",
		num(m["fixed-back-to-size-s"]), num(m["demand-back-to-size-s"]), num(m["scale-down-after-s"]+60),
		met(m["demand-back-to-size-s"] <= m["scale-down-after-s"]+60))
	w("What to expect: a start misses when the claims of the last warm-up W have taken every one of the\n")
	w("pool's warm + starting instances, so a pool held at T misses about P(Poisson(λ·W) ≥ T) of its starts.\n")
	w("At 2/s with W = %s s that is %s%% for T = 12 (`max_warm`); the target formula would keep %s.\n\n",
		num(m["demand-warmup-s"]), num(100*poissonTail(2*m["demand-warmup-s"], 12)), num(math.Ceil(2*m["demand-warmup-s"]+2*math.Sqrt(2*m["demand-warmup-s"]))))
}

// poissonTail is P(N >= k) for N Poisson with mean mu.
func poissonTail(mu float64, k int) float64 {
	p, cdf := math.Exp(-mu), 0.0
	for i := range k {
		cdf += p
		p *= mu / float64(i+1)
	}
	return 1 - cdf
}

func met(ok bool) string {
	if ok {
		return "met"
	}
	return "**missed**"
}

func num(v float64) string {
	switch {
	case v == float64(int64(v)):
		return strconv.FormatInt(int64(v), 10)
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}

// others renders every other benchmark family as one table: a row per
// sub-benchmark, a column per metric.
func others(w func(string, ...any), r *results) {
	var families []string
	rows := map[string][]string{}
	for _, name := range r.order {
		fam, _, _ := strings.Cut(name, "/")
		if fam == "BenchmarkJobStart" || fam == "BenchmarkJobStartGVisor" || fam == "BenchmarkStorm" || fam == "BenchmarkStepLoad" || fam == "BenchmarkClusterBurst" {
			continue
		}
		if rows[fam] == nil {
			families = append(families, fam)
		}
		rows[fam] = append(rows[fam], name)
	}
	for _, fam := range families {
		w("## %s\n\n", strings.TrimPrefix(fam, "Benchmark"))
		if a := about[fam]; a != "" {
			w("%s\n\n", a)
		}
		units := map[string]bool{}
		for _, name := range rows[fam] {
			for u := range r.metrics[name] {
				units[u] = true
			}
		}
		cols := slices.Sorted(maps.Keys(units))
		w("| benchmark | %s |\n|---|%s\n", strings.Join(cols, " | "), strings.Repeat("---:|", len(cols)))
		for _, name := range rows[fam] {
			label := strings.TrimPrefix(strings.TrimPrefix(name, fam), "/")
			if label == "" {
				label = strings.TrimPrefix(fam, "Benchmark")
			}
			cells := make([]string, len(cols))
			for i, u := range cols {
				if v, ok := r.metrics[name][u]; ok {
					cells[i] = num(v)
				}
			}
			w("| %s | %s |\n", label, strings.Join(cells, " | "))
		}
		w("\n")
	}
}

func run(name string, args ...string) string {
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	return string(out)
}

func firstLine(s string) string { l, _, _ := strings.Cut(s, "\n"); return strings.TrimSpace(l) }

func commit() string {
	c := strings.TrimSpace(run("git", "rev-parse", "--short", "HEAD"))
	if st := run("git", "status", "--porcelain"); strings.TrimSpace(st) != "" && !strings.HasPrefix(st, "unknown") {
		c += " with uncommitted changes"
	}
	return c
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func memTotal() string {
	b, _ := os.ReadFile("/proc/meminfo")
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			if f := strings.Fields(rest); len(f) > 0 {
				kib, _ := strconv.ParseFloat(f[0], 64)
				return fmt.Sprintf("%.1f GiB RAM", kib/1024/1024)
			}
		}
	}
	return "unknown RAM"
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for line := range bytes.Lines(b) {
		if k, v, ok := strings.Cut(string(line), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}
