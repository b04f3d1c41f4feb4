package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-pool/internal/nomadtest"
)

// prepareFor is how long the prepared template's preparation takes (a
// stand-in for a clone or an install).
const prepareFor = "10"

// BenchmarkJobStartPrepared measures what readiness buys, from a sandbox
// job's registration to the first line of its output, interleaved on one
// agent:
//
//   - prepared-pool: a warm pool of example/pools/exec.nomad.hcl made to
//     prepare for 10 s and then write a marker, with a ready command for it
//     (every run a hit on a prepared sandbox);
//   - prepared-bare: a warm pool of the same template without preparation or
//     readiness check (goal: prepared-pool within 10% of it);
//   - prepared-cold: the prepared template run directly, its preparation
//     included (goal: at least 20x prepared-pool).
//
// BENCH_RUNS sets the runs per job (default 20). Run it with -benchtime 1x.
func BenchmarkJobStartPrepared(b *testing.B) {
	if _, err := nomadtest.Binary(); err != nil {
		b.Skipf("skipping: %v", err)
	}
	if os.Geteuid() != 0 {
		b.Skip("skipping: the exec driver needs root")
	}
	bare, err := filepath.Abs("../example/pools/exec.nomad.hcl")
	if err != nil {
		b.Fatal(err)
	}
	text, err := os.ReadFile(bare)
	if err != nil {
		b.Fatal(err)
	}
	prepare := `sleep ` + prepareFor + `; echo done > "$NOMAD_TASK_DIR/../prepared"`
	prepared := strings.Replace(string(text), `command = "/bin/sleep"
        args    = ["infinity"]`, `command = "/bin/sh"
        args    = ["-c", `+hclString(prepare+`; exec sleep infinity`)+`]`, 1)
	prepared = strings.Replace(prepared, `driver = "exec"`, `driver = "exec"
      meta {
        agentkernel_pool_ready          = "test -f prepared"
        agentkernel_pool_ready_interval = "200ms"
      }`, 1)
	if !strings.Contains(prepared, "sleep infinity") || !strings.Contains(prepared, "agentkernel_pool_ready") {
		b.Fatalf("example/pools/exec.nomad.hcl changed shape; the prepared template is:\n%s", prepared)
	}
	spec := filepath.Join(b.TempDir(), "prepared.nomad.hcl")
	if err := os.WriteFile(spec, []byte(prepared), 0o644); err != nil {
		b.Fatal(err)
	}
	const size = 2
	block := "config {\n" +
		"  pool \"prepared\" {\n    jobspec = \"" + spec + "\"\n    size = 2\n    max = 4\n    claim_timeout = \"120s\"\n  }\n" +
		"  pool \"bare\" {\n    jobspec = \"" + bare + "\"\n    size = 2\n    max = 4\n    claim_timeout = \"120s\"\n  }\n}"
	a := nomadtest.Start(b, nomadtest.Options{PluginDir: nomadtest.BuildPlugin(b), PluginConfig: block})
	settle(b, a, "bare", size)
	settle(b, a, "prepared", size)

	onPool := func(id, pool string) *api.Job {
		job := benchJob(b, a, "bench-pool.nomad.hcl", id)
		job.TaskGroups[0].Tasks[0].Config["pool"] = pool
		return job
	}
	p50 := compareStarts(b, a, "prepared", size, []startVariant{
		{"prepared-pool", func(id string) *api.Job { return onPool(id, "prepared") }},
		{"prepared-bare", func(id string) *api.Job {
			settle(b, a, "bare", size) // compareStarts settles the prepared pool only
			return onPool(id, "bare")
		}},
		{"prepared-cold", func(id string) *api.Job {
			return directJob(b, a, spec, id, "/bin/sh", "-c", prepare+`; echo first line`)
		}},
	})
	b.ReportMetric(float64(p50["prepared-cold"])/float64(p50["prepared-pool"]), "cold/prepared-x")
	b.ReportMetric(float64(p50["prepared-pool"])/float64(p50["prepared-bare"]), "prepared/bare-x")
}
