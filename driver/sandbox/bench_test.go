package sandbox

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// BenchmarkLaunch measures Launch on a real agent, per task driver: by exec,
// through a primed sandbox's launch session, and, as the floor of the first, one
// bare exec round trip (/bin/true) through the API.
// Skipped without a nomad binary (NOMAD_BIN).
func BenchmarkLaunch(b *testing.B) {
	r, boxes := startSandboxes(b)
	for _, drv := range []string{"raw_exec", "exec"} {
		box, ok := boxes[drv]
		if !ok {
			continue
		}
		ref := box.ref
		env := map[string]string{"A": "1", "SECRET_TOKEN": "s3cr3t", "LONGER": string(bytes.Repeat([]byte("x"), 512))}
		// A sandbox's secrets dir is a 1 MiB tmpfs: drop each env file after use.
		var id string
		dropEnv := func() { os.Remove(filepath.Join(ref.HostAllocDir, ref.Task, "secrets", "agentkernel-"+id+".env")) }
		b.Run(drv+"/launch", func(b *testing.B) {
			n := 0
			measure(b, func(ctx context.Context) error {
				n++
				id = fmt.Sprintf("bench-%d-%d", b.N, n)
				return r.Launch(ctx, ref, Spec{ID: id, Command: "/bin/true", Env: env})
			}, dropEnv)
		})
		b.Run(drv+"/launch-primed", func(b *testing.B) {
			// A session serves one launch: prime again, untimed, after each.
			prime := func() {
				if err := r.Prime(context.Background(), ref); err != nil {
					b.Fatal(err)
				}
			}
			prime()
			n := 0
			measure(b, func(ctx context.Context) error {
				n++
				id = fmt.Sprintf("primed-%d-%d", b.N, n)
				return r.Launch(ctx, ref, Spec{ID: id, Command: "/bin/true", Env: env})
			}, func() { dropEnv(); prime() })
		})
		b.Run(drv+"/exec-true", func(b *testing.B) {
			measure(b, func(ctx context.Context) error {
				code, err := r.call(ctx, ref, false, []string{"/bin/true"}, bytes.NewReader(nil), &bytes.Buffer{}, &bytes.Buffer{}, nil)
				if err == nil && code != 0 {
					err = fmt.Errorf("exit code %d", code)
				}
				return err
			}, nil)
		})
	}
}

// BenchmarkLaunchLocal measures the launcher script alone: sh, mkdir, cat,
// setsid and the supervisor on this machine, no Nomad.
func BenchmarkLaunchLocal(b *testing.B) {
	r, ref := localSandbox(b)
	n := 0
	measure(b, func(ctx context.Context) error {
		n++
		return r.Launch(ctx, ref, Spec{ID: fmt.Sprintf("local-%d-%d", b.N, n), Command: "/bin/true", Env: map[string]string{"A": "1"}})
	}, nil)
}

// measure runs op b.N times, and after, untimed, after each, and reports p50
// and p90 latency in ms.
func measure(b *testing.B, op func(context.Context) error, after func()) {
	b.Helper()
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		start := time.Now()
		err := op(ctx)
		lat = append(lat, time.Since(start))
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		if after != nil {
			b.StopTimer()
			after()
			b.StartTimer()
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	pct := func(p float64) float64 {
		return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.5), "p50-ms")
	b.ReportMetric(pct(0.9), "p90-ms")
}
