package taskfiles

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/agentkernel/agentkernel-pool/driver/allocfs"
)

// BenchmarkTree measures the copy mechanism alone, on this machine's disk: the
// copy in of a task's alloc/data of 10,000 files and 200 MiB into a sandbox,
// and the write-back after the command changed 1% of the files and added as
// many. Each iteration uses fresh dirs; making the tree is not timed.
func BenchmarkTree(b *testing.B) {
	const files, size = 10_000, 200 << 20 / 10_000
	blob := make([]byte, size)
	var in, out []time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		task, sandbox := b.TempDir(), b.TempDir()
		for d := range 100 {
			dir := filepath.Join(task, "alloc/data", fmt.Sprintf("d%03d", d))
			if err := os.MkdirAll(dir, 0o755); err != nil {
				b.Fatal(err)
			}
			for f := range files / 100 {
				if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%03d", f)), blob, 0o644); err != nil {
					b.Fatal(err)
				}
			}
		}
		for _, d := range []string{"agent/local", "agent/secrets", "agent/private"} {
			_ = os.MkdirAll(filepath.Join(task, d), 0o755)
		}
		for _, d := range []string{"sandbox/local", "sandbox/secrets", "alloc/data"} {
			_ = os.MkdirAll(filepath.Join(sandbox, d), 0o755)
		}
		s := &Sync{Task: allocfs.New(task, "t").WithHardLinks(), Sandbox: allocfs.New(sandbox, "s"), Trees: Trees("agent", "sandbox"),
			UID: -1, GID: -1, StatePath: filepath.Join(task, "agent/private/state.json")}
		b.StartTimer()
		begin := time.Now()
		if _, err := s.In(); err != nil {
			b.Fatal(err)
		}
		in = append(in, time.Since(begin))
		b.StopTimer()
		time.Sleep(10 * time.Millisecond)
		for d := range 100 {
			dir := filepath.Join(sandbox, "alloc/data", fmt.Sprintf("d%03d", d))
			_ = os.WriteFile(filepath.Join(dir, "f000"), []byte("changed"), 0o644)
			_ = os.WriteFile(filepath.Join(dir, "new"), blob, 0o644)
		}
		b.StartTimer()
		begin = time.Now()
		if _, err := s.Out(); err != nil {
			b.Fatal(err)
		}
		out = append(out, time.Since(begin))
	}
	b.StopTimer()
	b.ReportMetric(float64(median(in).Milliseconds()), "in-ms")
	b.ReportMetric(float64(median(out).Milliseconds()), "out-ms")
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}
