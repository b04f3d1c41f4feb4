package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-pool/internal/nodeattr"
	"github.com/agentkernel/agentkernel-pool/internal/nomadtest"
)

// BenchmarkStepLoad (issue 11, "Step load"): Poisson arrivals of sandbox jobs
// at 0.2/s for 60 s, then 2/s for 120 s, then idle, on a raw_exec template
// whose warm-up takes about 3 s more than raw_exec's own (its artifact comes
// from a local server that answers after 3 s, as an image pull would). The
// same arrivals (same seed) run against a fixed pool (size 2) and then a
// demand-driven one (size 2, max_warm 12, scale_down_after 1m) on the same
// agent. Reported per pool: hit rate and claim wait p99 in the 2/s phase after
// its first 10 s, the measured warm-up (plugin /metrics), and for the demand
// pool the time from the end of the 2/s phase until it is back to size warm.
//
// BENCH_STEP_SCALE (default 1) scales every phase and scale_down_after, for a
// short trial run: BENCH_STEP_SCALE=0.2 takes about a fifth of the time.
//
//	NOMAD_BIN=/work/bin/nomad go test ./e2e -run '^$' -bench StepLoad -benchtime 1x -timeout 60m
func BenchmarkStepLoad(b *testing.B) {
	if _, err := nomadtest.Binary(); err != nil {
		b.Skipf("skipping: %v", err)
	}
	scale := 1.0
	if v, err := strconv.ParseFloat(os.Getenv("BENCH_STEP_SCALE"), 64); err == nil && v > 0 {
		scale = v
	}
	sc := func(d time.Duration) time.Duration { return time.Duration(float64(d) * scale).Round(time.Second) }
	var (
		lowFor, highFor = sc(60 * time.Second), sc(120 * time.Second)
		skipHigh        = sc(10 * time.Second) // the demand pool's first 10 s at 2/s: learning
		scaleDownAfter  = sc(time.Minute)
		pullDelay       = 3 * time.Second
	)

	// The "image": served after pullDelay, so each warm instance waits for it.
	pulls := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(pullDelay):
			_, _ = w.Write([]byte("image\n"))
		case <-r.Context().Done():
		}
	}))
	defer pulls.Close()
	tmpl := filepath.Join(b.TempDir(), "slow.nomad.hcl")
	err := os.WriteFile(tmpl, []byte(`job "sandbox-slow" {
  group "sandbox" {
    task "sandbox" {
      driver = "raw_exec"
      artifact {
        source      = "`+pulls.URL+`/image.txt"
        destination = "local/"
      }
      config {
        command = "/bin/sleep"
        args    = ["infinity"]
      }
      resources {
        cpu    = 20
        memory = 16
      }
    }
  }
}
`), 0o644)
	if err != nil {
		b.Fatal(err)
	}
	metricsAddr := freeAddr(b)
	block := fmt.Sprintf(`config {
  metrics_address = %q
  pool "fixed" {
    jobspec = %q
    size = 2
    max = 40
    claim_timeout = "120s"
  }
  pool "demand" {
    jobspec = %q
    size = 2
    max_warm = 12
    max = 40
    scale_down_after = %q
    claim_timeout = "120s"
  }
}`, metricsAddr, tmpl, tmpl, scaleDownAfter.String())
	a := nomadtest.Start(b, nomadtest.Options{PluginDir: nomadtest.BuildPlugin(b), PluginConfig: block})
	settle(b, a, "fixed", 2)
	settle(b, a, "demand", 2)

	// One arrival schedule for both runs: Poisson, 0.2/s then 2/s.
	rng := rand.New(rand.NewPCG(11, 11))
	var arrivals []time.Duration
	for at, rate := time.Duration(0), 0.2; ; {
		at += time.Duration(rng.ExpFloat64() / rate * float64(time.Second))
		if rate == 0.2 && at >= lowFor {
			at, rate = lowFor, 2
			continue
		}
		if at >= lowFor+highFor {
			break
		}
		arrivals = append(arrivals, at)
	}

	b.ResetTimer()
	for _, pool := range []string{"fixed", "demand"} {
		settle(b, a, pool, 2)
		samples, errs, lastAt := stepRun(b, a, pool, arrivals)

		var hits, n, failed int
		var waits []time.Duration
		for i, s := range samples {
			if errs[i] != nil || !s.dead || s.exit != 0 {
				if failed++; failed <= 3 {
					b.Logf("%s: job %s failed: %v, exit %d, events:\n%s", pool, s.jobID, errs[i], s.exit, s.events)
				}
				continue
			}
			if arrivals[i] < lowFor+skipHigh {
				continue
			}
			n++
			if s.hit {
				hits++
			}
			waits = append(waits, s.claim)
		}
		body := scrapeMetrics(b, metricsAddr)
		warmups := sample(body, `agentkernel_pool_warmup_duration_seconds_count{pool="`+pool+`"}`)
		warmup := sample(body, `agentkernel_pool_warmup_duration_seconds_sum{pool="`+pool+`"}`) / max(warmups, 1)
		peak := peakTarget(b, a, pool)

		// Idle: how long until the pool is back to size warm.
		back := waitBackToSize(b, a, pool, 2, scaleDownAfter+3*time.Minute).Sub(lastAt)
		b.Logf("%s: %d jobs, %d failed; 2/s phase after %s: %d/%d hits, claim wait p50 %s p99 %s; warm-up %.1fs (%v measured); target at the end %d; back to size %s after the last arrival",
			pool, len(samples), failed, skipHigh, hits, n, pct(waits, 0.5), pct(waits, 0.99), warmup, warmups, peak, back.Round(time.Second))
		b.ReportMetric(float64(len(samples)), pool+"-jobs")
		b.ReportMetric(float64(failed), pool+"-failed")
		b.ReportMetric(100*float64(hits)/float64(max(n, 1)), pool+"-hit-%")
		b.ReportMetric(ms(pct(waits, 0.99)), pool+"-wait-p99-ms")
		b.ReportMetric(ms(pct(waits, 0.5)), pool+"-wait-p50-ms")
		b.ReportMetric(warmup, pool+"-warmup-s")
		b.ReportMetric(back.Seconds(), pool+"-back-to-size-s")
	}
	b.ReportMetric(scaleDownAfter.Seconds(), "scale-down-after-s")
	b.ReportMetric(lowFor.Seconds(), "low-phase-s")
	b.ReportMetric(highFor.Seconds(), "high-phase-s")
	b.ReportMetric(skipHigh.Seconds(), "skipped-s")
	b.ReportMetric(float64(len(arrivals)), "arrivals")
}

// stepRun registers one job per arrival at its time, on pool, and returns each
// one's sample once all have ended, and when the last arrival was; every job
// is purged when it has ended.
func stepRun(b *testing.B, a *nomadtest.Agent, pool string, arrivals []time.Duration) ([]startSample, []error, time.Time) {
	samples := make([]startSample, len(arrivals))
	errs := make([]error, len(arrivals))
	ctx, cancel := context.WithTimeout(context.Background(), arrivals[len(arrivals)-1]+5*time.Minute)
	defer cancel()
	jobs := make([]*api.Job, len(arrivals))
	for i := range jobs {
		jobs[i] = benchJob(b, a, "bench-step.nomad.hcl", fmt.Sprintf("bench-step-%s-%03d", pool, i))
		jobs[i].TaskGroups[0].Tasks[0].Config["pool"] = pool
	}
	var done sync.WaitGroup
	start := time.Now()
	for i, job := range jobs {
		if !sleepUntil(ctx, start.Add(arrivals[i])) {
			break
		}
		done.Go(func() {
			s, begin, err := registerAndWaitLine(ctx, a, job, 5*time.Millisecond)
			if err == nil {
				err = finishSample(ctx, a, &s, begin, job.TaskGroups[0].Tasks[0].Name)
			}
			samples[i], errs[i] = s, err
			pctx, pcancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer pcancel()
			_, _, _ = a.Client.Jobs().Deregister(*job.ID, true, (&api.WriteOptions{}).WithContext(pctx))
		})
	}
	done.Wait()
	return samples, errs, start.Add(arrivals[len(arrivals)-1])
}

// sleepUntil waits until at or until ctx ends; it reports whether at came.
func sleepUntil(ctx context.Context, at time.Time) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(time.Until(at)):
		return true
	}
}

// waitBackToSize waits until pool's target and warm attributes are both size
// and returns when they were.
func waitBackToSize(b *testing.B, a *nomadtest.Agent, pool string, size int, within time.Duration) time.Time {
	began := time.Now()
	for time.Since(began) < within {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		n, err := a.Node(ctx)
		cancel()
		if err == nil && n.Attributes[nodeattr.Pool(pool, nodeattr.Target)] == strconv.Itoa(size) && n.Attributes[nodeattr.Pool(pool, nodeattr.Warm)] == strconv.Itoa(size) {
			return time.Now()
		}
		time.Sleep(time.Second)
	}
	b.Logf("%s not back to size %d within %s", pool, size, within)
	return time.Now()
}

func peakTarget(b *testing.B, a *nomadtest.Agent, pool string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n, err := a.Node(ctx)
	if err != nil {
		b.Logf("read node: %v", err)
		return 0
	}
	t, _ := strconv.Atoi(n.Attributes[nodeattr.Pool(pool, nodeattr.Target)])
	return t
}

// freeAddr is a 127.0.0.1 address with a port free right now.
func freeAddr(tb testing.TB) string {
	tb.Helper()
	srv := httptest.NewServer(http.NotFoundHandler())
	addr := strings.TrimPrefix(srv.URL, "http://")
	srv.Close()
	return addr
}
