package e2e

import (
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentkernel/agentkernel-pool/internal/nomadtest"
)

// TestMetrics: with metrics_address set, /metrics on a real agent counts
// every sandbox job's claim under one outcome (they add up to the jobs run)
// and shows the pool's gauges.
func TestMetrics(t *testing.T) {
	if _, err := nomadtest.Binary(); err != nil {
		t.Skipf("skipping e2e: %v", err)
	}
	block, addr := withMetricsAddress(t, poolBlock("dev", rawExecTemplate(t), 1, 4))
	a := nomadtest.Start(t, nomadtest.Options{PluginDir: nomadtest.BuildPlugin(t), PluginConfig: block})
	waitWarm(t, a, "dev", 1)

	const jobs = 3
	for i := range jobs {
		alloc := runJob(t, a, commandJob(t, "metrics-"+strconv.Itoa(i), "dev", "exit 0"))
		waitTask(t, a, alloc.ID, "agent", "dead", 60*time.Second)
	}
	waitWarm(t, a, "dev", 1)

	body := scrapeMetrics(t, addr)
	claims, observed := 0.0, 0.0
	for _, line := range strings.Split(body, "\n") {
		i := strings.LastIndexByte(line, ' ')
		if i < 0 || strings.HasPrefix(line, "#") {
			continue
		}
		v, _ := strconv.ParseFloat(line[i+1:], 64)
		switch {
		case strings.HasPrefix(line, "agentkernel_pool_claims_total{"):
			claims += v
		case strings.HasPrefix(line, "agentkernel_pool_claim_duration_seconds_count{"):
			observed += v
		}
	}
	t.Logf("claims: %v\n%s", claims, grepLines(body, "agentkernel_pool_claims_total", "agentkernel_pool_warm"))
	if claims != jobs || observed != jobs {
		t.Errorf("claims by outcome add up to %v (latency observations %v), want the %d jobs run", claims, observed, jobs)
	}
	// The Nomad API requests behind those jobs: a dispatch and a claim
	// record each at least, the inventory's watches, the runs' execs.
	requests := map[string]float64{}
	for _, line := range strings.Split(body, "\n") {
		rest, ok := strings.CutPrefix(line, `agentkernel_pool_nomad_api_requests_total{operation="`)
		if !ok {
			continue
		}
		op, _, _ := strings.Cut(rest, `"`)
		v, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		requests[op] += v
	}
	t.Logf("nomad api requests:\n%s", grepLines(body, "agentkernel_pool_nomad_api_requests_total"))
	for op, least := range map[string]float64{"jobs.dispatch": jobs, "variables.create": jobs, "jobs.deregister": jobs,
		"allocations.watch": 1, "jobs.watch": 1, "variables.watch": 1, "agent.self": 1, "alloc.exec.session": 1} {
		if requests[op] < least {
			t.Errorf("nomad api requests %s = %v, want at least %v", op, requests[op], least)
		}
	}
	if !strings.Contains(body, `agentkernel_pool_nomad_api_request_duration_seconds_count{operation="jobs.dispatch",result="ok"}`) {
		t.Errorf("no latency of the dispatches:\n%s", grepLines(body, "agentkernel_pool_nomad_api_request_duration_seconds_count"))
	}
	// The pools' own events reach /metrics (the driver hands its metrics to
	// the backend, which gives them to the pool manager): a dispatch for each
	// claimed sandbox, and the warm-ups.
	events := map[string]float64{}
	for _, line := range strings.Split(body, "\n") {
		for _, series := range []string{`agentkernel_pool_dispatches_total{pool="dev",result="ok"}`, `agentkernel_pool_warmup_duration_seconds_count{pool="dev"}`} {
			if v, ok := strings.CutPrefix(line, series+" "); ok {
				events[series], _ = strconv.ParseFloat(v, 64)
			}
		}
	}
	if events[`agentkernel_pool_dispatches_total{pool="dev",result="ok"}`] < jobs || events[`agentkernel_pool_warmup_duration_seconds_count{pool="dev"}`] < 1 {
		t.Errorf("pool events %v: want %d dispatches and a warm-up at least:\n%s", events, jobs, grepLines(body, "agentkernel_pool_dispatches_total", "agentkernel_pool_warmup_duration_seconds_count"))
	}
	// The pool works: status lists it with no error.
	if out := pluginStatus(t, a); !strings.Contains(out, " dev ") || strings.Contains(out, "Pool errors") {
		t.Errorf("status of a working pool:\n%s", out)
	}
	if !strings.Contains(body, `agentkernel_pool_warm{pool="dev"} 1`) || !strings.Contains(body, `agentkernel_pool_size{pool="dev"} 1`) {
		t.Errorf("pool gauges missing or wrong:\n%s", grepLines(body, "agentkernel_pool_"))
	}
}

// withMetricsAddress is the plugin block block with metrics_address set to a
// free local address, and that address.
func withMetricsAddress(tb testing.TB, block string) (string, string) {
	tb.Helper()
	addr := freeAddr(tb)
	return strings.Replace(block, "config {", "config {\n  metrics_address = \""+addr+"\"", 1), addr
}

func grepLines(s string, prefixes ...string) string {
	var b strings.Builder
	for _, line := range strings.Split(s, "\n") {
		for _, p := range prefixes {
			if strings.HasPrefix(line, p) {
				b.WriteString(line + "\n")
				break
			}
		}
	}
	return b.String()
}

// pluginStatus runs `agentkernel-pool status` against the agent.
func pluginStatus(t *testing.T, a *nomadtest.Agent) string {
	t.Helper()
	out, err := exec.Command(filepath.Join(nomadtest.BuildPlugin(t), "agentkernel-pool"), "status", "-address", a.Addr).CombinedOutput()
	if err != nil {
		t.Errorf("status: %v\n%s", err, out)
	}
	return string(out)
}
