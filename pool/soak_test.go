package pool

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/agentkernel/agentkernel-pool/internal/nomadtest"
)

// TestSoakClaimRelease checks the Manager's bounds: goroutine count and RSS stay
// flat across many sequential claims and releases against a real agent with a
// raw_exec pool. It runs only with AKP_SOAK=1 (and not under -short), and needs
// a nomad binary (NOMAD_BIN, else PATH); AKP_SOAK_CYCLES sets the number of
// cycles (default 1000). Every release purges its sandbox and the pool refills
// in the background, so with a pool of 10 most claims take a pre-warmed
// allocation; a claim that finds none waits for the refill.
//
//	AKP_SOAK=1 NOMAD_BIN=/work/bin/nomad go test ./pool -run TestSoakClaimRelease -v -timeout 60m
func TestSoakClaimRelease(t *testing.T) {
	if os.Getenv("AKP_SOAK") == "" || testing.Short() {
		t.Skip("soak test: set AKP_SOAK=1 (and do not pass -short)")
	}
	cycles := 1000
	if s := os.Getenv("AKP_SOAK_CYCLES"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("AKP_SOAK_CYCLES=%q: want a positive number", s)
		}
		cycles = n
	}
	const name, size, slack = "soak", 10, 10
	a := nomadtest.Start(t, nomadtest.Options{})
	t.Cleanup(func() { purgeAll(t, a, name) }) // after the Manager stops
	// Warnings only: per-claim debug logging through t.Log would be the biggest
	// allocation in the process and skew the figures.
	mark := markLeaks()
	m, err := New(Options{Client: a.Client, NodeID: a.NodeID, Pools: []Config{{Name: name, Jobspec: rawExecJobspec(t, "3600"), Size: size, Max: size + 5}},
		Logger: hclog.New(&hclog.LoggerOptions{Name: "pool", Level: hclog.Warn, Output: tbWriter{t}})})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(ctx(t, 30*time.Second)); err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() { m.Stop(); noLeaks(t, mark) })
	waitFor(t, 2*time.Minute, "pool warm", func() bool { s := m.Stats()[name]; return s.Warm == size && s.Starting == 0 })

	type sample struct {
		at         int
		goroutines int
		rssKB      int
		heapKB     uint64
	}
	measure := func(at int) sample {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return sample{at: at, goroutines: runtime.NumGoroutine(), rssKB: vmRSS(t), heapKB: ms.HeapAlloc / 1024}
	}
	// settled waits for the pool to be full again and idle, so samples compare
	// like with like.
	settled := func() {
		waitFor(t, 2*time.Minute, "pool refilled", func() bool { s := m.Stats()[name]; return s.Warm == size && s.Starting == 0 && s.Claimed == 0 })
		time.Sleep(500 * time.Millisecond)
	}

	base := measure(0)
	samples := []sample{base}
	hits := 0
	start := time.Now()
	for i := 1; i <= cycles; i++ {
		// A made-up owner allocation per cycle, as the driver claims for
		// each task. Every 10th cycle, the owner's first claim is abandoned
		// (a start that never launched) and its second supersedes it: the
		// pool frees the first by itself, or settled() below never returns.
		// Contexts per cycle, cancelled at once: ctx(t, ...) would keep two
		// timers and cleanups per cycle until the test ends and show up as
		// heap growth.
		owner := Owner{AllocID: fmt.Sprintf("%08d-0000-4000-8000-000000000000", i), TaskName: "agent"}
		if i%10 == 0 {
			cctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			_, err := m.Claim(cctx, name, owner)
			cancel()
			if err != nil {
				t.Fatalf("abandoned claim %d: %v", i, err)
			}
		}
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		c, err := m.Claim(cctx, name, owner)
		cancel()
		if err != nil {
			t.Fatalf("claim %d: %v", i, err)
		}
		if c.Hit {
			hits++
		}
		rctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		err = m.Release(rctx, c)
		cancel()
		if err != nil {
			t.Fatalf("release %d: %v", i, err)
		}
		if i == 100 || i == cycles {
			loopTime := time.Since(start)
			settled()
			samples = append(samples, measure(i))
			start = start.Add(time.Since(start) - loopTime) // untime the settling
		}
	}
	elapsed := time.Since(start)
	for _, s := range samples {
		t.Logf("after %4d cycles: %d goroutines, VmRSS %d KiB, heap %d KiB", s.at, s.goroutines, s.rssKB, s.heapKB)
	}
	t.Logf("%d claim+release cycles in %s (%s per cycle), %d warm hits", cycles, elapsed.Round(time.Millisecond),
		(elapsed / time.Duration(cycles)).Round(time.Microsecond), hits)

	// Goroutines return to the baseline, give or take transient HTTP
	// connections; poll briefly for those to close.
	end := samples[len(samples)-1]
	deadline := time.Now().Add(10 * time.Second)
	for end.goroutines > base.goroutines+slack && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
		end = measure(cycles)
	}
	if end.goroutines > base.goroutines+slack {
		buf := make([]byte, 1<<20)
		t.Fatalf("goroutines grew from %d to %d over %d cycles:\n%s", base.goroutines, end.goroutines, cycles, buf[:runtime.Stack(buf, true)])
	}
	if st := m.Stats()[name]; st.Claimed != 0 {
		t.Errorf("stats after the soak %+v: want no claims left", st)
	}
	if n := claimRecords(t, a, name); n != 0 {
		t.Errorf("%d claim records left in Nomad", n)
	}
}

// vmRSS reads this process's resident set size in KiB.
func vmRSS(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc/self/status: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")))
			if err != nil {
				t.Fatalf("VmRSS line %q: %v", line, err)
			}
			return n
		}
	}
	t.Fatal("no VmRSS in /proc/self/status")
	return 0
}
