package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-pool/internal/nomadtest"
)

// BenchmarkClusterBurst: B sandbox jobs registered at once on a cluster of
// one server and three clients holding W = 6 warm sandboxes (raw_exec pool
// "burst", size 2 per node, a device group), B = 6 and 9 under Nomad's
// default scheduler algorithm (binpack), and 9 under spread; then the same
// burst of plain raw_exec jobs on the same cluster, the floor. The clock of
// each job starts before its registration and stops when its first stdout
// line is in its log file on its node (as BenchmarkJobStart); the burst is
// complete when every job printed. Each burst starts once every node is back
// to 2 warm, nothing claimed.
func BenchmarkClusterBurst(b *testing.B) {
	const (
		clients = 3
		size    = 2
	)
	c := sandboxCluster(b, clients, size, 8)
	for _, run := range []struct {
		n    int
		algo api.SchedulerAlgorithm
	}{{6, api.SchedulerAlgorithmBinpack}, {9, api.SchedulerAlgorithmBinpack}, {9, api.SchedulerAlgorithmSpread}} {
		n := run.n
		name := fmt.Sprintf("B=%d", n)
		if run.algo != api.SchedulerAlgorithmBinpack {
			name += "," + string(run.algo)
		}
		b.Run(name, func(b *testing.B) {
			schedulerAlgorithm(b, c, run.algo)
			waitAdvertised(b, c, size, 3*time.Minute)
			waitIdleCPU(30 * time.Second)
			jobs := burstJobs(b, c, fmt.Sprintf("bench-burst%d", n), n)
			b.ResetTimer()
			samples, errs := burst(c, jobs)
			b.StopTimer()
			pool := tally(samples, errs, b.Logf)
			b.Logf("pool burst of %d: %s", n, pool)
			blocked := blockedEvals(b, c, fmt.Sprintf("bench-burst%d", n))
			purgeAll(b, c, jobs)

			raws := make([]*api.Job, n)
			for i := range raws {
				raws[i] = directJob(b, c.Server, rawExecTemplate(b), fmt.Sprintf("bench-rawburst%d-%02d", n, i), "/bin/sh", "-c", "echo first line; sleep 5")
			}
			waitAdvertised(b, c, size, 3*time.Minute)
			waitIdleCPU(30 * time.Second)
			rawSamples, rawErrs := burst(c, raws)
			raw := tally(rawSamples, rawErrs, func(string, ...any) {})
			rawOK := 0
			for i, s := range rawSamples {
				if rawErrs[i] == nil && s.dead && s.exit == 0 {
					rawOK++
				}
			}
			b.Logf("raw_exec burst of %d: %d ok, by node %v, first line p50 %s p90 %s max %s", n, rawOK, raw.byNode, pct(raw.first, 0.5), pct(raw.first, 0.9), pct(raw.first, 1))
			purgeAll(b, c, raws)

			b.ReportMetric(float64(n), "jobs")
			b.ReportMetric(clients*size, "warm")
			b.ReportMetric(float64(pool.ok), "succeeded")
			b.ReportMetric(float64(pool.hits), "hits")
			b.ReportMetric(float64(pool.exact), "in-reserved")
			b.ReportMetric(float64(pool.twice), "claimed-twice")
			b.ReportMetric(float64(len(blocked)), "blocked")
			b.ReportMetric(float64(len(pool.byNode)), "nodes")
			b.ReportMetric(ms(pct(pool.first, 0.5)), "pool-p50-ms")
			b.ReportMetric(ms(pct(pool.first, 0.9)), "pool-p90-ms")
			b.ReportMetric(ms(pct(pool.first, 1)), "pool-all-ms")
			b.ReportMetric(phase(samples, func(s startSample) time.Duration { return s.received }), "pool-received-ms")
			b.ReportMetric(phase(samples, func(s startSample) time.Duration { return s.started - s.received }), "pool-setup-ms")
			var waits []time.Duration
			for _, s := range samples {
				if !s.hit && s.sandbox != "" {
					waits = append(waits, s.claim)
				}
			}
			b.ReportMetric(ms(pct(waits, 0.5)), "miss-wait-ms")
			b.ReportMetric(float64(rawOK), "raw-succeeded")
			b.ReportMetric(ms(pct(raw.first, 0.5)), "raw-p50-ms")
			b.ReportMetric(ms(pct(raw.first, 0.9)), "raw-p90-ms")
			b.ReportMetric(ms(pct(raw.first, 1)), "raw-all-ms")
			b.ReportMetric(phase(rawSamples, func(s startSample) time.Duration { return s.received }), "raw-received-ms")
			b.ReportMetric(phase(rawSamples, func(s startSample) time.Duration { return s.started - s.received }), "raw-setup-ms")
		})
	}
}

// phase is the median of a phase of the samples that have one, in ms.
func phase(samples []clusterSample, of func(startSample) time.Duration) float64 {
	var d []time.Duration
	for _, s := range samples {
		if s.received > 0 && s.started > 0 {
			d = append(d, of(s.startSample))
		}
	}
	return ms(pct(d, 0.5))
}

// schedulerAlgorithm sets the cluster's scheduler algorithm.
func schedulerAlgorithm(tb testing.TB, c *nomadtest.Cluster, algo api.SchedulerAlgorithm) {
	tb.Helper()
	op := c.Server.Client.Operator()
	cur, _, err := op.SchedulerGetConfiguration(nil)
	if err != nil {
		tb.Fatalf("read scheduler configuration: %v", err)
	}
	cfg := cur.SchedulerConfig
	cfg.SchedulerAlgorithm = algo
	if _, _, err := op.SchedulerSetConfiguration(cfg, nil); err != nil {
		tb.Fatalf("set scheduler algorithm %s: %v", algo, err)
	}
}
