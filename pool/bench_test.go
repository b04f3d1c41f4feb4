package pool

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-pool/internal/nomadtest"
)

// BenchmarkClaim measures claim latency on a real dev agent at pool sizes 5,
// 50 and 200: the Manager's way (a warm candidate from the watched inventory,
// one check-and-set write, one allocation read) beside the naive way (list
// the dispatched jobs, read every job's allocations, then the same write).
// Percentiles are reported as p50-ms and p99-ms. Run it with a fixed count:
//
//	NOMAD_BIN=/work/bin/nomad go test ./pool -run '^$' -bench Claim -benchtime 200x
func BenchmarkClaim(b *testing.B) {
	a := nomadtest.Start(b, nomadtest.Options{})
	for _, size := range []int{5, 50, 200} {
		name := fmt.Sprintf("bench%d", size)
		var m *Manager
		// One pool per size for all runs of both sub-benchmarks; it goes
		// when the whole benchmark ends (Stop first, then the purge).
		setup := func() *Manager {
			if m == nil {
				b.Cleanup(func() { purgeAll(b, a, name) })
				// max = size: a claim dispatches no replacement while the
				// batch runs, so the figures are the claim's own cost,
				// not that of sandboxes starting beside it on two cores.
				// The pool refills between batches, untimed.
				m = agentManager(b, a, Config{Name: name, Jobspec: rawExecJobspec(b, "3600"), Size: size, Max: size})
				waitWarm(b, m, name, size)
			}
			return m
		}
		b.Run(fmt.Sprintf("pool/size=%d", size), func(b *testing.B) {
			m := setup()
			waitWarm(b, m, name, size) // a previous run may have drained it
			batch := min(size, 20)     // claims between refills; size 200 stays >= 180 warm
			var lat []time.Duration
			var held []*Claim
			misses := 0
			b.ResetTimer()
			for i := range b.N {
				if i%batch == 0 && i > 0 {
					b.StopTimer()
					releaseAll(b, m, held)
					held = held[:0]
					waitWarm(b, m, name, size)
					b.StartTimer()
				}
				start := time.Now()
				c, err := m.Claim(ctx(b, time.Minute), name, Owner{})
				d := time.Since(start)
				if err != nil {
					b.Fatal(err)
				}
				if !c.Hit {
					misses++
					b.Logf("miss at claim %d after %s: %+v", i, d, m.Stats()[name])
				}
				lat = append(lat, d)
				held = append(held, c)
			}
			b.StopTimer()
			releaseAll(b, m, held)
			report(b, lat)
			b.ReportMetric(float64(misses), "misses")
		})
		b.Run(fmt.Sprintf("naive/size=%d", size), func(b *testing.B) {
			m := setup()
			waitWarm(b, m, name, size)
			// The naive way has no manager; a running one would replace
			// what the naive claims mark and fight over the pool.
			m.Stop()
			parent := ParentJobID(name, a.NodeID)
			var lat []time.Duration
			b.ResetTimer()
			for range b.N {
				start := time.Now()
				path, err := naiveClaim(ctx(b, time.Minute), a.Client, parent, name)
				d := time.Since(start)
				if err != nil {
					b.Fatal(err)
				}
				lat = append(lat, d)
				b.StopTimer() // put it back: the naive claim only marks
				if _, err := a.Client.Variables().Delete(path, (&api.WriteOptions{}).WithContext(ctx(b, 10*time.Second))); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			b.StopTimer()
			report(b, lat)
		})
	}
}

// naiveClaim is the way to beat: list the pool's dispatched jobs, read each
// job's allocations to find the running ones, then claim one with the same
// check-and-set write. Its cost grows with the pool.
func naiveClaim(ctx context.Context, c *api.Client, parent, pool string) (string, error) {
	jobs, _, err := c.Jobs().List((&api.QueryOptions{Prefix: parent + dispatchSep}).WithContext(ctx))
	if err != nil {
		return "", err
	}
	var running []*api.AllocationListStub
	for _, j := range jobs {
		allocs, _, err := c.Jobs().Allocations(j.ID, false, (&api.QueryOptions{}).WithContext(ctx))
		if err != nil {
			return "", err
		}
		for _, a := range allocs {
			if a.ClientStatus == api.AllocClientStatusRunning && a.DesiredStatus == api.AllocDesiredStatusRun {
				running = append(running, a)
			}
		}
	}
	for _, a := range running {
		path := ClaimPath(pool, a.ID)
		_, _, err := c.Variables().CheckedCreate(&api.Variable{Path: path, Items: api.VariableItems{itemReason: "naive"}},
			(&api.WriteOptions{}).WithContext(ctx))
		var conflict api.ErrCASConflict
		if errors.As(err, &conflict) {
			continue
		}
		return path, err
	}
	return "", fmt.Errorf("naive claim: no unclaimed running allocation among %d jobs, %d running allocations", len(jobs), len(running))
}

// waitWarm waits until pool has n warm allocations and nothing starting or
// stopping, then lets the agent settle.
func waitWarm(b *testing.B, m *Manager, pool string, n int) {
	b.Helper()
	waitFor(b, 3*time.Minute, fmt.Sprintf("%d warm in %s", n, pool), func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		v := m.pools[pool].view
		return v.counts.Warm == n && v.counts.Starting == 0 && v.stopping == 0
	})
	time.Sleep(2 * time.Second) // executors and log shippers of new allocations settle
}

func releaseAll(b *testing.B, m *Manager, held []*Claim) {
	b.Helper()
	for _, c := range held {
		if err := m.Release(ctx(b, 30*time.Second), c); err != nil {
			b.Fatal(err)
		}
	}
}

// report adds p50 and p99 latency in milliseconds.
func report(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	pct := func(p float64) float64 {
		i := min(len(lat)-1, int(p*float64(len(lat))))
		return float64(lat[i].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}
