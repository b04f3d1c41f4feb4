package e2e

import (
	"context"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentkernel/agentkernel-pool/internal/nodeattr"
	"github.com/agentkernel/agentkernel-pool/internal/nomadtest"
)

// TestDemandDrivenTarget: a raw_exec pool with size 1 and max_warm 4 grows its
// warm target under a burst of sandbox jobs: the node attribute, `status`
// and /metrics say so, and the warm allocations follow. Once the burst has
// been over for scale_down_after (20 s here), the target and the warm
// allocations fall back to size.
func TestDemandDrivenTarget(t *testing.T) {
	if _, err := nomadtest.Binary(); err != nil {
		t.Skipf("skipping e2e: %v", err)
	}
	block, addr := withMetricsAddress(t, strings.Replace(poolBlock("dev", rawExecTemplate(t), 1, 10), "size = 1",
		"size = 1\n    max_warm = 4\n    scale_down_after = \"20s\"", 1))
	a := nomadtest.Start(t, nomadtest.Options{PluginDir: nomadtest.BuildPlugin(t), PluginConfig: block})
	waitWarm(t, a, "dev", 1)
	if got := attr(t, a, nodeattr.Target); got != "1" {
		t.Fatalf("idle target attribute %q, want size 1", got)
	}

	// A burst: 6 sandbox jobs at once, each holding its sandbox a moment.
	const burst = 6
	var allocs []string
	for i := range burst {
		allocs = append(allocs, runJob(t, a, commandJob(t, "burst-"+strconv.Itoa(i), "dev", "sleep 2")).ID)
	}
	waitFor(t, 30*time.Second, "target attribute above size", func() bool {
		n, _ := strconv.Atoi(attr(t, a, nodeattr.Target))
		return n > 1
	})
	for _, id := range allocs {
		if ts := waitTask(t, a, id, "agent", "dead", 90*time.Second); !strings.Contains(events(ts), "sandbox") {
			t.Errorf("burst task without a sandbox:\n%s", events(ts))
		}
	}
	target, _ := strconv.Atoi(attr(t, a, nodeattr.Target))
	t.Logf("target after a burst of %d jobs: %d", burst, target)
	if target <= 1 || target > 4 {
		t.Fatalf("target %d after the burst, want 2..4 (above size 1, within max_warm 4)", target)
	}
	waitWarm(t, a, "dev", target)

	// `status` prints the node's target; /metrics has it and the warm-ups.
	node, err := a.Node(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(nomadtest.BuildPlugin(t), "agentkernel-pool"), "status", "-address", a.Addr).CombinedOutput()
	f := strings.Fields(lastLine(string(out))) // NODE POOL SIZE TARGET MAX WARM ...
	if err != nil || len(f) < 6 || (f[0] != node.Name && f[0] != node.ID[:8]) || f[1] != "dev" || f[3] != strconv.Itoa(target) {
		t.Errorf("status (%v) does not show target %d:\n%s", err, target, out)
	}
	body := scrapeMetrics(t, addr)
	if !strings.Contains(body, `agentkernel_pool_target{pool="dev"} `+strconv.Itoa(target)+"\n") {
		t.Errorf("/metrics lacks target %d:\n%s", target, grepLines(body, "agentkernel_pool_target"))
	}
	warmups, dispatched := sample(body, `agentkernel_pool_warmup_duration_seconds_count{pool="dev"}`),
		sample(body, `agentkernel_pool_dispatches_total{pool="dev",result="ok"}`)
	t.Logf("warm-ups measured %v, dispatches %v, warm-up sum %vs", warmups, dispatched, sample(body, `agentkernel_pool_warmup_duration_seconds_sum{pool="dev"}`))
	// Every warm instance turned warm once; the ones claimed while starting
	// were never warm, so warm-ups are at most the dispatches.
	if warmups < float64(target) || warmups > dispatched {
		t.Errorf("warm-ups %v, dispatches %v: want at least the %d warm now, at most the dispatches", warmups, dispatched, target)
	}

	// Idle: back to size after scale_down_after (20 s), the surplus purged.
	began := time.Now()
	waitFor(t, 90*time.Second, "target attribute back to 1", func() bool { return attr(t, a, nodeattr.Target) == "1" })
	waitWarm(t, a, "dev", 1)
	waitFor(t, 60*time.Second, "1 live warm instance", func() bool { return len(warmJobs(t, a)) == 1 })
	t.Logf("back to size %s after the burst's tasks ended", time.Since(began).Round(time.Second))
	// Purged: every used sandbox and the surplus warm ones.
	body = scrapeMetrics(t, addr)
	if n := sample(body, `agentkernel_pool_purges_total{pool="dev",result="ok"}`); n < float64(burst+target-1) {
		t.Errorf("purges %v, want at least %d used and %d surplus", n, burst, target-1)
	}
}

// attr reads the node attribute f of pool dev.
func attr(t *testing.T, a *nomadtest.Agent, f nodeattr.Field) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n, err := a.Node(ctx)
	if err != nil {
		return ""
	}
	return n.Attributes[nodeattr.Pool("dev", f)]
}

func scrapeMetrics(t testing.TB, addr string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}

// sample is the value of the exposition line that starts with series, or 0.
func sample(body, series string) float64 {
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}
