package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/agentkernel/agentkernel-pool/driver"
	"github.com/agentkernel/agentkernel-pool/internal/nomadtest"
)

// BenchmarkMetricsOverhead (issue 11, "Metrics overhead"): the plugin's CPU
// while sandbox jobs arrive at 2/s for 60 s, once without metrics_address and
// once with it and /metrics scraped every 5 s (three times Prometheus's
// default rate), each on a fresh agent with the same raw_exec pool (size 4,
// max_warm 8). Plugin CPU is read from /proc over the arrivals and 10 s
// after; reported in ms of CPU per second, and the ratio of the two, taken
// in one run.
//
//	NOMAD_BIN=/work/bin/nomad go test ./e2e -run '^$' -bench MetricsOverhead -benchtime 1x
func BenchmarkMetricsOverhead(b *testing.B) {
	if _, err := nomadtest.Binary(); err != nil {
		b.Skipf("skipping: %v", err)
	}
	const rate, span = 2.0, 60 * time.Second
	var arrivals []time.Duration
	for at := time.Duration(0); at < span; at += time.Duration(float64(time.Second) / rate) {
		arrivals = append(arrivals, at)
	}
	cpu := map[bool]float64{}
	b.ResetTimer()
	for _, metrics := range []bool{false, true} {
		b.StopTimer()
		addr, extra := "", ""
		if metrics {
			addr = freeAddr(b)
			extra = fmt.Sprintf("  metrics_address = %q\n", addr)
		}
		block := fmt.Sprintf("config {\n%s  pool \"step\" {\n    jobspec = %q\n    size = 4\n    max_warm = 8\n    max = 30\n    claim_timeout = \"120s\"\n  }\n}",
			extra, rawExecTemplate(b))
		a := nomadtest.Start(b, nomadtest.Options{PluginDir: nomadtest.BuildPlugin(b), PluginConfig: block})
		settle(b, a, "step", 4)
		waitIdleCPU(30 * time.Second)
		plugin := a.Processes(driver.Name)
		ctx, cancel := context.WithCancel(context.Background())
		scraped := make(chan int)
		go func() {
			n := 0
			defer func() { scraped <- n }()
			if !metrics {
				return
			}
			t := time.NewTicker(5 * time.Second)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					scrapeMetrics(b, addr)
					n++
				}
			}
		}()
		b.StartTimer()
		began, t0 := time.Now(), cpuTicks(plugin)
		samples, errs, _ := stepRun(b, a, "step", arrivals)
		time.Sleep(10 * time.Second) // the last releases and refills
		t1, took := cpuTicks(plugin), time.Since(began)
		b.StopTimer()
		cancel()
		n := <-scraped
		failed := 0
		for i := range samples {
			if errs[i] != nil || samples[i].exit != 0 {
				failed++
			}
		}
		name := map[bool]string{false: "off", true: "on"}[metrics]
		cpu[metrics] = float64(t1-t0) * 10 / took.Seconds() // ticks are 10 ms
		b.Logf("metrics %s: %d jobs, %d failed, %d scrapes; plugin CPU %.1f ms/s over %s", name, len(samples), failed, n, cpu[metrics], took.Round(time.Second))
		b.ReportMetric(cpu[metrics], "plugin-cpu-ms/s-metrics-"+name)
		b.ReportMetric(float64(failed), "failed-"+name)
		a.Stop()
	}
	if cpu[false] > 0 {
		b.ReportMetric(cpu[true]/cpu[false], "on/off")
	}
}
