package driver

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/agentkernel/agentkernel-pool/driver/sandbox"
	"github.com/agentkernel/agentkernel-pool/internal/nomadapi"
	"github.com/agentkernel/agentkernel-pool/plugin/proto/base"
	"github.com/agentkernel/agentkernel-pool/plugin/proto/drivers"
	"github.com/agentkernel/agentkernel-pool/pool"
)

// scrape reads /metrics and returns each sample's value by its line's name
// and labels, as the exposition format writes them.
func scrape(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	out := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad sample line %q", line)
		}
		out[line[:i]] = v
	}
	return out
}

// Claims by outcome, counted on /metrics, add up to the task starts that
// claimed: two hits, a miss, a timeout and a failing pool's error. The
// latency histogram counts each once, and the pool gauges are the pool's
// counts.
func TestMetricsCountClaimsByOutcome(t *testing.T) {
	e := newEnv(t)
	cfg := map[string]any{"address": nil, "ca_file": nil, "cert_file": nil, "key_file": nil, "namespace": nil,
		"tls_server_name": nil, "token_file": nil, "metrics_address": "127.0.0.1:0", "pool": e.devPool()}
	_, err := e.c.Base.SetConfig(context.Background(), &base.SetConfigRequest{MsgpackConfig: encode(t, cfg), PluginApiVersion: "v0.1.0",
		NomadConfig: &base.NomadConfig{Driver: &base.NomadDriverConfig{ClientMinPort: 14000, ClientMaxPort: 14512}}})
	if err != nil {
		t.Fatalf("SetConfig: %v", err)
	}
	e.waitHealth(drivers.FingerprintResponse_HEALTHY)
	e.drv.metrics.mu.Lock()
	addr := e.drv.metrics.addr.String()
	e.drv.metrics.mu.Unlock()

	starts := []struct {
		miss bool
		err  error
	}{
		{}, {}, {miss: true},
		{err: fmt.Errorf(`claim warm allocation in pool "dev": no warm allocation after waiting 5s: %w`, context.DeadlineExceeded)},
		{err: fmt.Errorf(`claim warm allocation in pool "dev": %w: task "sandbox": Driver Failure`, pool.ErrFailing)},
	}
	for i, s := range starts {
		e.pool.mu.Lock()
		e.pool.miss, e.pool.claimErr = s.miss, s.err
		e.pool.mu.Unlock()
		_, err := e.c.Driver.StartTask(context.Background(), &drivers.StartTaskRequest{
			Task: e.taskConfig(fmt.Sprintf("t%d", i), map[string]any{"pool": "dev", "command": "/bin/true"}, nil)})
		if (err != nil) != (s.err != nil) {
			t.Fatalf("start %d: %v", i, err)
		}
	}

	got := scrape(t, addr)
	total := 0.0
	for outcome, want := range map[string]float64{"hit": 2, "miss": 1, "timeout": 1, "error": 1} {
		labels := `{outcome="` + outcome + `",pool="dev"}`
		if n := got["agentkernel_pool_claims_total"+labels]; n != want {
			t.Errorf("claims %s = %v, want %v", outcome, n, want)
		}
		if n := got["agentkernel_pool_claim_duration_seconds_count"+labels]; n != want {
			t.Errorf("claim latency count %s = %v, want %v", outcome, n, want)
		}
		total += got["agentkernel_pool_claims_total"+labels]
	}
	if total != float64(len(starts)) {
		t.Errorf("claims by outcome add up to %v, want the %d starts", total, len(starts))
	}
	for name, want := range map[string]float64{"warm": 2, "claimed": 3, "size": 2, "target": 3, "max": 8, "failing": 0} {
		if n, ok := got["agentkernel_pool_"+name+`{pool="dev"}`]; !ok || n != want {
			t.Errorf("gauge %s = %v (found %v), want %v", name, n, ok, want)
		}
	}
	// The three starts that claimed hold their tasks until destroyed.
	if n := got["agentkernel_pool_running_tasks"]; n != 3 {
		t.Errorf("running_tasks = %v, want 3", n)
	}
}

// The dashboard and alert rules in example/monitoring name only series the
// plugin serves: a renamed metric would leave panels empty and alerts silent.
func TestExampleMonitoringUsesServedMetrics(t *testing.T) {
	m := newMetrics()
	m.countTasks(func() int { return 0 })
	m.setPools(func() map[string]pool.Stats { return map[string]pool.Stats{"dev": {}} })
	m.observeClaim("dev", &pool.Claim{Hit: true}, nil, time.Millisecond)
	m.WarmedUp("dev", time.Second)
	m.Dispatched("dev", nil)
	m.Purged("dev", nil)
	m.APICall("jobs.dispatch", nomadapi.CallOK, time.Millisecond)
	families, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	served := map[string]bool{}
	for _, f := range families {
		served[f.GetName()] = true
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			served[f.GetName()+suffix] = f.GetType().String() == "HISTOGRAM"
		}
	}
	names := regexp.MustCompile(`agentkernel_pool_[a-z_]+`)
	for _, file := range []string{"../example/monitoring/alerts.yml", "../example/monitoring/grafana-dashboard.json"} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		used := names.FindAllString(string(b), -1)
		if len(used) == 0 {
			t.Errorf("%s names no agentkernel_pool series", file)
		}
		for _, n := range used {
			if !served[n] {
				t.Errorf("%s uses %s, which the plugin does not serve", file, n)
			}
		}
	}
}

// The production backend meters every Nomad API request it makes: the pool
// client's (here the health check and a task's stats) and the sandbox's execs,
// by operation and result.
func TestBackendMetersNomadAPIRequests(t *testing.T) {
	agent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/agent/self" {
			_, _ = w.Write([]byte(`{"stats":{"client":{"node_id":"5c1a"}}}`))
			return
		}
		http.Error(w, "no such endpoint", http.StatusNotFound)
	}))
	defer agent.Close()
	m := newMetrics()
	cfg := &Config{API: nomadapi.Config{Address: agent.URL}}
	b, err := newNomadBackend(cfg, nomadapi.NewToken(""), hclog.NewNullLogger(), func() {}, m)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Check(ctx); err != nil {
		t.Fatalf("check: %v", err)
	}
	if _, err := b.Usage(ctx, "default", "0b6f", "agent"); err == nil {
		t.Fatal("stats of an allocation the agent does not know")
	}
	runner := b.(*nomadBackend).Runner
	if err := runner.Prime(ctx, sandbox.Ref{Namespace: "default", AllocID: "0b6f", Task: "sandbox"}); err == nil {
		t.Fatal("a launch session into an allocation the agent does not know")
	}
	requests, observed := map[string]float64{}, map[string]uint64{}
	families, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		for _, s := range f.GetMetric() {
			l := map[string]string{}
			for _, p := range s.GetLabel() {
				l[p.GetName()] = p.GetValue()
			}
			key := l["operation"] + " " + l["result"]
			switch f.GetName() {
			case "agentkernel_pool_nomad_api_requests_total":
				requests[key] = s.GetCounter().GetValue()
			case "agentkernel_pool_nomad_api_request_duration_seconds":
				observed[key] = s.GetHistogram().GetSampleCount()
			}
		}
	}
	want := []string{"agent.self " + nomadapi.CallOK, "alloc.stats " + nomadapi.Call4xx, sandbox.OpExecSession + " " + nomadapi.Call4xx}
	if len(requests) != len(want) || len(observed) != len(want) {
		t.Errorf("requests %v, latencies observed %v; want one each of %q", requests, observed, want)
	}
	for _, k := range want {
		if requests[k] != 1 || observed[k] != 1 {
			t.Errorf("%s: %v requests, %v latencies, want 1", k, requests[k], observed[k])
		}
	}
}
