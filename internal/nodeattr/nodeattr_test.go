package nodeattr

import "testing"

// The names operators write into constraints and read in `nomad node status`
// stay as published: the one place they are spelled out.
func TestNamesAsPublished(t *testing.T) {
	for got, want := range map[string]string{
		Version:                    "driver.agentkernel-pool.version",
		Pool("dev", Warm):          "driver.agentkernel-pool.pool.dev.warm",
		Pool("dev", Size):          "driver.agentkernel-pool.pool.dev.size",
		Pool("dev", Target):        "driver.agentkernel-pool.pool.dev.target",
		Pool("dev", Max):           "driver.agentkernel-pool.pool.dev.max",
		Pool("dev", Claimed):       "driver.agentkernel-pool.pool.dev.claimed",
		Pool("dev", Preparing):     "driver.agentkernel-pool.pool.dev.preparing",
		Pool("dev", PrimeFailures): "driver.agentkernel-pool.pool.dev.prime_failures",
		Pool("my-pool_2", Error):   "driver.agentkernel-pool.pool.my-pool_2.error",
	} {
		if got != want {
			t.Errorf("attribute %q, want %q", got, want)
		}
	}
}

func TestParsePool(t *testing.T) {
	for _, c := range []struct {
		attr string
		pool string
		f    Field
		ok   bool
	}{
		{Pool("py", Size), "py", Size, true},
		{Pool("my-pool_2", Error), "my-pool_2", Error, true},
		{Version, "", "", false},
		{"driver.agentkernel-pool.pool.size", "", "", false},
		{"driver.other.pool.py.size", "", "", false},
		{"unique.hostname", "", "", false},
	} {
		pool, f, ok := ParsePool(c.attr)
		if pool != c.pool || f != c.f || ok != c.ok {
			t.Errorf("ParsePool(%q) = %q, %q, %v; want %q, %q, %v", c.attr, pool, f, ok, c.pool, c.f, c.ok)
		}
	}
}
