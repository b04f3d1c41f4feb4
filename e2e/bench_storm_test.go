package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-pool/driver/shipper"
	"github.com/agentkernel/agentkernel-pool/internal/nomadtest"
)

// BenchmarkStorm registers 50 sandbox jobs at once against a pool of size 5, max
// 60, and reports how many succeeded, how many sandboxes were handed out twice,
// what the pool left behind 60 s after every job was purged, start latency
// (registration to first output line, measured as in BenchmarkJobStart) and the
// plugin's memory. The template is example/pools/raw_exec.nomad.hcl: 50 exec
// chroots (about 9 s each) at once would measure two shared cores, not the pool.
// Each job prints its sandbox's alloc dir and sleeps 5 s, so all 50 hold a
// sandbox at the same time.
//
//	NOMAD_BIN=/work/bin/nomad go test ./e2e -run '^$' -bench Storm -benchtime 1x
func BenchmarkStorm(b *testing.B) {
	const (
		pool  = "storm"
		size  = 5
		limit = 60
		jobs  = 50
		quiet = 60 * time.Second
	)
	if _, err := nomadtest.Binary(); err != nil {
		b.Skipf("skipping: %v", err)
	}
	tmpl, err := filepath.Abs("../example/pools/raw_exec.nomad.hcl")
	if err != nil {
		b.Fatal(err)
	}
	a := nomadtest.Start(b, nomadtest.Options{PluginDir: nomadtest.BuildPlugin(b), PluginConfig: poolBlock(pool, tmpl, size, limit)})
	settle(b, a, pool, size)
	rssIdle := pluginRSS(b, a)

	specs := make([]*api.Job, jobs)
	for i := range specs {
		specs[i] = benchJob(b, a, "bench-storm.nomad.hcl", fmt.Sprintf("bench-storm-%02d", i))
	}
	var rssStorm float64
	var ships []int
	var shipKiB, shipPssKiB int64
	b.ResetTimer()
	samples, errs := storm(a, specs, func() {
		// Every job that will has printed and sleeps: peak claims, one shipper each.
		rssStorm = pluginRSS(b, a)
		ships = helpers(a, shipper.ShipCommand)
		for _, p := range ships {
			shipKiB += rssKiB(p)
			shipPssKiB += pssKiB(p)
		}
	})
	b.StopTimer()

	var ok, failed, hits int
	var lat, waits []time.Duration
	byEvent, byOutput := map[string]int{}, map[string]int{}
	for i, s := range samples {
		if errs[i] == nil && s.dead && s.exit == 0 && strings.HasPrefix(s.stdout, "sandbox ") {
			ok++
		} else if failed++; failed <= 5 { // a few are enough to see why
			b.Logf("job %s (alloc %s) failed: err %v, first line at %s, exit %d, stdout %q, events:\n%s", s.jobID, s.allocID, errs[i], s.first, s.exit, s.stdout, s.events)
		}
		if s.first > 0 {
			lat = append(lat, s.first)
		}
		if s.sandbox != "" {
			byEvent[s.sandbox]++
		}
		if s.hit {
			hits++
		} else if s.sandbox != "" {
			waits = append(waits, s.claim)
		}
		if id := sandboxFromOutput(s.stdout); id != "" {
			byOutput[id]++
		}
	}
	twice := max(dups(byEvent), dups(byOutput))
	b.Logf("claims named by events: %d sandboxes, by output: %d; %d warm hits", len(byEvent), len(byOutput), hits)

	for _, j := range specs {
		purgeJob(b, a, *j.ID)
	}
	b.Logf("all %d jobs purged; waiting %s", jobs, quiet)
	time.Sleep(quiet)
	live, total := dispatched(b, a)
	claims, _, err := a.Client.Variables().PrefixList("agentkernel-pool/"+pool+"/claims/", nil)
	if err != nil {
		b.Fatalf("list claim records: %v", err)
	}
	rssAfter := pluginRSS(b, a)

	// The floor for comparison: the same storm of plain raw_exec jobs.
	for i := range specs {
		specs[i] = directJob(b, a, tmpl, fmt.Sprintf("bench-rawstorm-%02d", i), "/bin/sh", "-c", "echo sandbox $NOMAD_ALLOC_DIR; sleep 5")
	}
	settle(b, a, pool, size)
	rawSamples, rawErrs := storm(a, specs, func() {})
	var rawOK int
	var rawLat []time.Duration
	for i, s := range rawSamples {
		if rawErrs[i] == nil && s.exit == 0 {
			rawOK++
		}
		if s.first > 0 {
			rawLat = append(rawLat, s.first)
		}
	}

	b.ReportMetric(jobs, "jobs")
	b.ReportMetric(float64(ok), "succeeded")
	b.ReportMetric(float64(twice), "claimed-twice")
	b.ReportMetric(float64(hits), "warm-hits")
	b.ReportMetric(float64(live), "warm-jobs-left")
	b.ReportMetric(float64(max(0, total-size)), "jobs-beyond-target")
	b.ReportMetric(float64(len(claims)), "claims-left")
	b.ReportMetric(ms(pct(lat, 0.5)), "start-p50-ms")
	b.ReportMetric(ms(pct(lat, 0.99)), "start-p99-ms")
	b.ReportMetric(ms(pct(waits, 0.5)), "miss-wait-p50-ms")
	b.ReportMetric(float64(rawOK), "raw-succeeded")
	b.ReportMetric(ms(pct(rawLat, 0.5)), "raw-start-p50-ms")
	b.ReportMetric(ms(pct(rawLat, 0.99)), "raw-start-p99-ms")
	b.ReportMetric(rssIdle, "rss-idle-MiB")
	b.ReportMetric(rssStorm, "rss-storm-MiB")
	b.ReportMetric(rssAfter, "rss-after-MiB")
	b.ReportMetric(float64(len(ships)), "shippers")
	if len(ships) > 0 {
		b.ReportMetric(float64(shipKiB)/1024/float64(len(ships)), "shipper-rss-MiB")
		b.ReportMetric(float64(shipPssKiB)/1024/float64(len(ships)), "shipper-pss-MiB")
	}
}

// storm registers all jobs at once, each from its own goroutine, and returns each
// one's sample once all have ended; peak runs when every job has printed its first
// line (or failed). The jobs stay registered.
func storm(a *nomadtest.Agent, jobs []*api.Job, peak func()) ([]startSample, []error) {
	samples := make([]startSample, len(jobs))
	errs := make([]error, len(jobs))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var lined, done sync.WaitGroup
	lined.Add(len(jobs))
	gate := make(chan struct{})
	for i, job := range jobs {
		done.Go(func() {
			<-gate
			s, begin, err := registerAndWaitLine(ctx, a, job, 5*time.Millisecond)
			lined.Done()
			if err == nil {
				err = finishSample(ctx, a, &s, begin, job.TaskGroups[0].Tasks[0].Name)
			}
			samples[i], errs[i] = s, err
		})
	}
	close(gate)
	lined.Wait()
	peak()
	done.Wait()
	return samples, errs
}

// sandboxFromOutput takes the sandbox's alloc id from "sandbox <alloc dir>".
func sandboxFromOutput(out string) string {
	line, _, _ := strings.Cut(out, "\n")
	dir, ok := strings.CutPrefix(line, "sandbox ")
	if !ok {
		return ""
	}
	// <data_dir>/alloc/<sandbox alloc id>/alloc
	return filepath.Base(filepath.Dir(strings.TrimSpace(dir)))
}

// dups counts the claims beyond the first of every sandbox.
func dups(m map[string]int) int {
	n := 0
	for _, c := range m {
		n += c - 1
	}
	return n
}

// dispatched counts the pool's dispatched warm jobs: live ones and all registered.
func dispatched(b *testing.B, a *nomadtest.Agent) (live, total int) {
	b.Helper()
	jobs, _, err := a.Client.Jobs().PrefixList("agentkernel-pool-")
	if err != nil {
		b.Fatalf("list warm jobs: %v", err)
	}
	for _, j := range jobs {
		if j.ParentID == "" {
			continue
		}
		total++
		if j.Status != "dead" {
			live++
		}
	}
	return live, total
}
