package pool

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/agentkernel/agentkernel-pool/pool/pooltest"
)

// fakeManager starts a Manager against a fresh fake Nomad API. The Manager is
// stopped, and checked for leaked goroutines, when the test ends.
func fakeManager(t *testing.T, tweak func(*Manager), cfgs ...Config) (*Manager, *pooltest.Server) {
	t.Helper()
	srv := pooltest.New()
	t.Cleanup(srv.Close)
	m := newManager(t, srv, tweak, cfgs...)
	if err := m.Start(ctx(t, 10*time.Second)); err != nil {
		t.Fatalf("start: %v", err)
	}
	return m, srv
}

// newManager creates (without starting) a Manager against srv.
func newManager(t *testing.T, srv *pooltest.Server, tweak func(*Manager), cfgs ...Config) *Manager {
	t.Helper()
	for i := range cfgs {
		if cfgs[i].Jobspec == "" {
			cfgs[i].Jobspec = jobspecFile(t, "job \"x\" {}\n")
		}
	}
	m, err := New(Options{
		Client: srv.Client(), NodeID: pooltest.NodeID, Pools: cfgs,
		Logger: hclog.New(&hclog.LoggerOptions{Name: "pool", Level: hclog.Debug, Output: tbWriter{t}}),
	})
	if err != nil {
		t.Fatalf("new: %v", err)
	}
	if tweak != nil {
		tweak(m)
	}
	t.Cleanup(func() {
		m.Stop()
		noLeaks(t)
	})
	return m
}

// jobspecFile writes a jobspec to a temporary file and returns its path.
func jobspecFile(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "pool.nomad.hcl")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// noLeaks fails when a goroutine of a Manager outlives Stop.
func noLeaks(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		buf := make([]byte, 1<<20)
		stacks := string(buf[:runtime.Stack(buf, true)])
		if !strings.Contains(stacks, "pool.(*Manager)") {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("goroutines of the pool manager still running after Stop:\n%s", stacks)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ctx returns a context that ends after d or with the test.
func ctx(t testing.TB, d time.Duration) context.Context {
	c, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return c
}

// waitFor polls cond (test-side only) until it holds or d passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
