package taskfiles

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
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

// BenchmarkInSmall measures the copy in on a task's start path as it is
// under docker with runc (alloc/data mounted, not copied): local/ and
// secrets/ of 10 files of 200 bytes, two in a subdirectory and one 0600
// secret, into a fresh sandbox tree, state file included; and the same with
// both dirs empty, which a start without files costs. Making the dirs is not
// timed. cpu-us/op is the process's CPU time per copy.
func BenchmarkInSmall(b *testing.B) {
	files := []struct {
		name string
		mode os.FileMode
	}{
		{"agent/local/payload.json", 0o644}, {"agent/local/config.env", 0o644}, {"agent/local/run.sh", 0o755},
		{"agent/local/a.txt", 0o644}, {"agent/local/b.txt", 0o644}, {"agent/local/c.txt", 0o644},
		{"agent/local/repo/main.py", 0o644}, {"agent/local/repo/util.py", 0o644},
		{"agent/secrets/token", 0o600}, {"agent/secrets/env", 0o644},
	}
	for _, n := range []int{0, len(files)} {
		b.Run("files="+strconv.Itoa(n), func(b *testing.B) {
			base, blob := b.TempDir(), make([]byte, 200)
			task := filepath.Join(base, "task")
			for _, d := range []string{"agent/local", "agent/secrets", "agent/private"} {
				if err := os.MkdirAll(filepath.Join(task, d), 0o755); err != nil {
					b.Fatal(err)
				}
			}
			for _, f := range files[:n] {
				p := filepath.Join(task, f.name)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					b.Fatal(err)
				}
				if err := os.WriteFile(p, blob, f.mode); err != nil {
					b.Fatal(err)
				}
			}
			benchIn(b, task, base, n)
		})
	}
}

func benchIn(b *testing.B, task, base string, files int) {
	trees := Trees("agent", "sandbox")[:2] // local, secrets
	b.ReportAllocs()
	var cpu time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		sandbox := filepath.Join(base, "sandbox-"+strconv.Itoa(i))
		for _, d := range []string{"sandbox/local", "sandbox/secrets"} {
			if err := os.MkdirAll(filepath.Join(sandbox, d), 0o777); err != nil {
				b.Fatal(err)
			}
		}
		s := &Sync{Task: allocfs.New(task, "t").WithHardLinks(), Sandbox: allocfs.New(sandbox, "s"), Trees: trees,
			UID: os.Getuid(), GID: os.Getgid(), StatePath: filepath.Join(task, "agent/private/state.json")}
		c0 := cpuTime()
		b.StartTimer()
		st, err := s.In()
		b.StopTimer()
		cpu += cpuTime() - c0
		b.StartTimer()
		if err != nil {
			b.Fatal(err)
		}
		if st.Files != files {
			b.Fatalf("copied %d files, want %d", st.Files, files)
		}
	}
	// In µs, and the clock's time too (the report leaves ns/op out).
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1e3, "us/op")
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N)/1e3, "cpu-us/op")
}

// cpuTime is the CPU time the process has used, user and system: on a
// machine other work shares, it varies less than the time on the clock.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
