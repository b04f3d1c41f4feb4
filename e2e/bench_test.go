package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/agentkernel/agentkernel-pool/driver"
	"github.com/agentkernel/agentkernel-pool/internal/nodeattr"
	"github.com/agentkernel/agentkernel-pool/internal/nomadtest"
	"github.com/agentkernel/agentkernel-pool/plugin"
	"github.com/agentkernel/agentkernel-pool/plugin/plugintest"
	"github.com/agentkernel/agentkernel-pool/plugin/proto/base"
	"github.com/agentkernel/agentkernel-pool/plugin/proto/drivers"
)

// BenchmarkStartTaskWarm measures StartTask on the warm path, claim plus launch of
// the command in the sandbox, through the plugin's gRPC surface against a real
// agent, with the pool refilled between starts so every start is a hit: one
// sub-benchmark per runtime this machine has (raw_exec; exec as root; docker
// with runc, with runc as an unprivileged user and with gVisor's runsc where
// dockerd has them), all pools on one agent. BENCH_POOLS (a comma-separated
// list of those names) limits it.
func BenchmarkStartTaskWarm(b *testing.B) {
	if _, err := nomadtest.Binary(); err != nil {
		b.Skipf("skipping: %v", err)
	}
	const size = 2
	templates := map[string]string{}
	templates["raw_exec"], _ = filepath.Abs("../example/pools/raw_exec.nomad.hcl")
	if os.Geteuid() == 0 {
		templates["exec"], _ = filepath.Abs("../example/pools/exec.nomad.hcl")
	}
	extra := ""
	if why := dockerReady(); why == "" && benchPool("docker-runc", "docker-runsc", "docker-runc-nobody") {
		ensureImage(b)
		templates["docker-runc"], templates["docker-runsc"] = dockerTemplate(b, "runc", ""), dockerTemplate(b, "runsc", "")
		templates["docker-runc-nobody"] = dockerTemplate(b, "runc", "nobody") // unprivileged: alloc/data mounted
		extra = dockerPluginConfig
	} else {
		b.Logf("no docker pools: %s", why)
	}
	for name := range templates {
		if !benchPool(name) {
			delete(templates, name)
		}
	}
	a := nomadtest.Start(b, nomadtest.Options{ExtraConfig: extra})
	d := driver.New(benchLogger(b), nil)
	defer d.Shutdown(context.Background())
	c := plugintest.Serve(b, d)
	pools := map[string]any{}
	for name, spec := range templates {
		pools[name] = map[string]any{"jobspec": spec, "size": fmt.Sprint(size), "max": "8", "claim_timeout": "120s"}
	}
	cfg := mustMsgpack(b, map[string]any{"address": a.Addr, "token_file": nil, "ca_file": nil, "cert_file": nil, "key_file": nil,
		"tls_server_name": nil, "namespace": nil, "pool": pools})
	ctx := context.Background()
	if _, err := c.Base.SetConfig(ctx, &base.SetConfigRequest{MsgpackConfig: cfg, PluginApiVersion: "v0.1.0",
		NomadConfig: &base.NomadConfig{Driver: &base.NomadDriverConfig{}}}); err != nil {
		b.Fatal(err)
	}
	evctx, evcancel := context.WithCancel(ctx)
	defer evcancel()
	events, err := d.TaskEvents(evctx)
	if err != nil {
		b.Fatal(err)
	}
	owner := runJob(b, a, jobHCL(b, "bench-owner.nomad.hcl"))
	waitTask(b, a, owner.ID, "agent", "running", 60*time.Second)
	// Every pool full first: an exec or gVisor pool filling up would load the
	// CPUs under another pool's measurements.
	for name := range templates {
		waitWarmAttr(b, d, name, size)
	}
	for _, name := range []string{"raw_exec", "exec", "docker-runc", "docker-runc-nobody", "docker-runsc"} {
		if templates[name] == "" {
			continue
		}
		b.Run(name, func(b *testing.B) { startTaskWarm(b, a, d, c, events, owner.ID, name, size, benchFiles{}) })
	}
	// The same start for a task with files (raw_exec uses the task's own
	// dirs, so only isolated pools show their cost): 10 small files in local/
	// (a payload, templates, a script), copied on the start path; and beside
	// them a 10,000-file, 200 MiB alloc/data (a cloned repository), which an
	// unprivileged sandbox (docker-runc-nobody) gets by a mount, a privileged
	// one (exec, docker-runc: root's files) or a gVisor one by copy.
	for _, name := range []string{"exec", "docker-runc", "docker-runc-nobody", "docker-runsc"} {
		if templates[name] == "" {
			continue
		}
		b.Run(name+"-10-files", func(b *testing.B) { startTaskWarm(b, a, d, c, events, owner.ID, name, size, benchFiles{local: 10}) })
		if name == "docker-runsc" {
			continue // a copy per start: BenchmarkTree in driver/taskfiles measures it
		}
		tree := bigTree(b)
		b.Run(name+"-10k-files-200MiB-data", func(b *testing.B) {
			startTaskWarm(b, a, d, c, events, owner.ID, name, size, benchFiles{local: 10, data: tree})
		})
	}
}

// benchFiles are the files of a benchmarked task: local small files in its
// local/, and data, a prepared tree moved in as the group's alloc/data for the
// start and out again afterwards.
type benchFiles struct {
	local int
	data  string
}

// bigTree is a 10,000-file, 200 MiB tree (100 dirs of 100 files of 20 KiB),
// made once per benchmark run.
func bigTree(b *testing.B) string {
	b.Helper()
	dir := filepath.Join(b.TempDir(), "data")
	chunk := make([]byte, 20<<10)
	for i := range 100 {
		sub := filepath.Join(dir, fmt.Sprintf("d%03d", i))
		if err := os.MkdirAll(sub, 0o777); err != nil {
			b.Fatal(err)
		}
		for j := range 100 {
			if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%03d", j)), chunk, 0o644); err != nil {
				b.Fatal(err)
			}
		}
	}
	return dir
}

// benchPool reports whether BENCH_POOLS (unset: all) names any of names.
func benchPool(names ...string) bool {
	list := os.Getenv("BENCH_POOLS")
	if list == "" {
		return true
	}
	for _, want := range strings.Split(list, ",") {
		if slices.Contains(names, strings.TrimSpace(want)) {
			return true
		}
	}
	return false
}

// startTaskWarm times b.N warm starts on one pool of the driver d, each task
// with the files given and owned by the allocation ownerID (a real one: the
// pool frees claims whose owner Nomad does not know), in an alloc dir of its own.
func startTaskWarm(b *testing.B, a *nomadtest.Agent, d *driver.Driver, c *plugintest.Client, events <-chan plugin.TaskEvent, ownerID, pool string, size int, files benchFiles) {
	ctx := context.Background()
	waitWarmAttr(b, d, pool, size)
	taskCfg := mustMsgpack(b, map[string]any{"pool": pool, "command": "/bin/true", "args": nil})
	root := filepath.Join(a.DataDir, "alloc")
	var lat, claimLat, rpcLat []time.Duration
	misses := 0
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		waitWarmAttr(b, d, pool, size)
		waitIdleCPU(30 * time.Second) // the last refill (an exec chroot, a container) is done
		run := fmt.Sprintf("bench-%08x-%012x", i, time.Now().UnixNano()&0xffffffffffff)
		allocDir := filepath.Join(root, run) // beside the sandboxes, as a real task's is
		for _, sub := range []string{"agent/private", "agent/local", "agent/secrets", "alloc"} {
			if err := os.MkdirAll(filepath.Join(allocDir, sub), 0o777); err != nil {
				b.Fatal(err)
			}
		}
		data := filepath.Join(allocDir, "alloc", "data")
		if files.data != "" {
			if err := os.Rename(files.data, data); err != nil {
				b.Fatal(err)
			}
		} else if err := os.Mkdir(data, 0o777); err != nil {
			b.Fatal(err)
		}
		for f := range files.local {
			if err := os.WriteFile(filepath.Join(allocDir, "agent", "local", fmt.Sprintf("file-%d.txt", f)), make([]byte, 1024), 0o644); err != nil {
				b.Fatal(err)
			}
		}
		tc := &drivers.TaskConfig{Id: ownerID + "/agent/" + run, Name: "agent", AllocId: ownerID, JobId: "e2e-bench-owner",
			Namespace: "default", MsgpackDriverConfig: taskCfg, AllocDir: allocDir}
		// The floor under any StartTask: a call that does nothing, through
		// the same gRPC connection, from the same idle state.
		rpcBegin := time.Now()
		if _, err := c.Driver.Capabilities(ctx, &drivers.CapabilitiesRequest{}); err != nil {
			b.Fatal(err)
		}
		rpcLat = append(rpcLat, time.Since(rpcBegin))
		waitIdleCPU(30 * time.Second)
		b.StartTimer()
		begin := time.Now()
		if _, err := c.Driver.StartTask(ctx, &drivers.StartTaskRequest{Task: tc}); err != nil {
			b.Fatalf("StartTask: %v", err)
		}
		lat = append(lat, time.Since(begin))
		b.StopTimer()
		for ev := range events { // the claim event carries the claim's own latency
			if cl, err := time.ParseDuration(ev.Annotations["claim_latency"]); err == nil {
				claimLat = append(claimLat, cl)
				if _, miss := ev.Annotations["waited"]; miss {
					misses++
				}
				break
			}
		}
		wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		if _, err := c.Driver.WaitTask(wctx, &drivers.WaitTaskRequest{TaskId: tc.Id}); err != nil {
			b.Fatalf("WaitTask: %v", err)
		}
		cancel()
		if _, err := c.Driver.DestroyTask(ctx, &drivers.DestroyTaskRequest{TaskId: tc.Id, Force: true}); err != nil {
			b.Fatalf("DestroyTask: %v", err)
		}
		if files.data != "" {
			if err := os.Rename(data, files.data); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
	}
	b.StopTimer()
	reportPercentiles(b, "start", lat)
	reportPercentiles(b, "claim", claimLat)
	reportPercentiles(b, "noop-rpc", rpcLat)
	b.ReportMetric(float64(misses), "misses")
}

func reportPercentiles(b *testing.B, name string, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	b.ReportMetric(float64(pct(0.50).Microseconds())/1000, name+"-p50-ms")
	b.ReportMetric(float64(pct(0.90).Microseconds())/1000, name+"-p90-ms")
	b.ReportMetric(float64(pct(0.99).Microseconds())/1000, name+"-p99-ms")
}

// waitWarmAttr waits until the driver's fingerprint shows want warm allocations.
func waitWarmAttr(b *testing.B, d *driver.Driver, pool string, want int) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	ch, err := d.Fingerprint(ctx)
	if err != nil {
		b.Fatal(err)
	}
	key := nodeattr.Pool(pool, nodeattr.Warm)
	for fp := range ch {
		if v, ok := fp.Attributes[key].(int64); ok && v >= int64(want) {
			return
		}
	}
	b.Fatalf("pool %s never reached %d warm", pool, want)
}

func mustMsgpack(b testing.TB, v any) []byte {
	out, err := msgpack.Marshal(v)
	if err != nil {
		b.Fatal(err)
	}
	return out
}

// benchLogger is the benchmarked driver's logger: none, or with BENCH_DRIVER_LOG
// set, debug lines in that file (a start's "started task" line splits its time
// into claim, files and launch).
func benchLogger(b *testing.B) hclog.Logger {
	p := os.Getenv("BENCH_DRIVER_LOG")
	if p == "" {
		return hclog.NewNullLogger()
	}
	f, err := os.Create(p)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	return hclog.New(&hclog.LoggerOptions{Level: hclog.Debug, Output: f})
}
