package pool

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
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
	mark := markLeaks()
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
		noLeaks(t, mark)
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

// leakMark is taken when a test creates its Manager: goroutines that
// existed before it (a failed earlier test's, for instance) are not that
// test's to answer for.
type leakMark int64

// markLeaks returns the mark for noLeaks: the highest goroutine id now (ids
// only grow, so every goroutine started later has a higher one).
func markLeaks() leakMark {
	var top int64
	for _, g := range goroutines() {
		top = max(top, g.id)
	}
	return leakMark(top)
}

type goroutineStack struct {
	id    int64
	stack string
}

// goroutines lists every goroutine with its stack.
func goroutines() []goroutineStack {
	buf := make([]byte, 4<<20)
	all := string(buf[:runtime.Stack(buf, true)])
	var out []goroutineStack
	for _, s := range strings.Split(all, "\n\n") {
		rest, ok := strings.CutPrefix(s, "goroutine ")
		if !ok {
			continue
		}
		idText, _, _ := strings.Cut(rest, " ")
		id, err := strconv.ParseInt(idText, 10, 64)
		if err != nil {
			continue
		}
		out = append(out, goroutineStack{id: id, stack: s})
	}
	return out
}

// noLeaks fails when a goroutine of a Manager started after mark outlives
// Stop.
func noLeaks(t testing.TB, mark leakMark) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		var left []string
		for _, g := range goroutines() {
			if g.id > int64(mark) && strings.Contains(g.stack, "pool.(*Manager)") {
				left = append(left, g.stack)
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("goroutines of this test's pool manager still running after Stop:\n%s", strings.Join(left, "\n\n"))
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
