package pool

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-pool/pool/pooltest"
)

// readyJob is the fake API's default template with task meta and the
// group's services.
func readyTemplate(meta map[string]string, services ...*api.Service) func(string) (*api.Job, error) {
	return func(hcl string) (*api.Job, error) {
		job, _ := pooltest.DefaultJob(hcl)
		job.TaskGroups[0].Tasks[0].Meta = meta
		job.TaskGroups[0].Services = services
		return job, nil
	}
}

// fakeReady is a ready command whose verdict the test sets.
type fakeReady struct {
	mu     sync.Mutex
	code   map[string]int // by allocation; missing: def
	def    int
	output string
	runs   atomic.Int32
	cmds   sync.Map // allocation -> the command it was asked to run
}

func (f *fakeReady) set(allocID string, code int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.code == nil {
		f.code = map[string]int{}
	}
	f.code[allocID] = code
}

func (f *fakeReady) setDefault(code int) { f.mu.Lock(); f.def = code; f.mu.Unlock() }

func (f *fakeReady) check(_ context.Context, w WarmAlloc) (ReadyResult, error) {
	f.runs.Add(1)
	f.cmds.Store(w.AllocID, w.ReadyCommand)
	f.mu.Lock()
	defer f.mu.Unlock()
	code, ok := f.code[w.AllocID]
	if !ok {
		code = f.def
	}
	out := ""
	if code != 0 {
		out = f.output
	}
	return ReadyResult{Code: code, Output: []byte(out)}, nil
}

// readyManager starts a Manager whose template has a ready command run by
// fr, with Prepare set as the driver sets it.
func readyManager(t *testing.T, fr *fakeReady, meta map[string]string, cfg Config, services ...*api.Service) (*Manager, *pooltest.Server) {
	t.Helper()
	srv := pooltest.New()
	t.Cleanup(srv.Close)
	srv.SetParseFunc(readyTemplate(meta, services...))
	m := newManager(t, srv, func(m *Manager) {
		m.prepare = func(context.Context, WarmAlloc) error { return nil }
		m.checkReadyFn = fr.check
	}, cfg)
	if err := m.Start(ctx(t, 10*time.Second)); err != nil {
		t.Fatalf("start: %v", err)
	}
	return m, srv
}

// A sandbox whose ready command fails is preparing, not warm: a claim
// waits and gets nothing; once the command passes, the claim gets it.
func TestClaimNeverGetsAnUnreadySandbox(t *testing.T) {
	fr := &fakeReady{def: 1, output: "clone still running"}
	m, _ := readyManager(t, fr, map[string]string{metaReady: "test -f local/repo/.git/HEAD", metaReadyInterval: "100ms"},
		Config{Name: "py", Size: 1, Max: 2})
	waitFor(t, 10*time.Second, "1 preparing", func() bool { return m.Stats()["py"].Preparing == 1 })
	waitFor(t, 10*time.Second, "a few failed checks", func() bool { return fr.runs.Load() >= 3 })
	if s := m.Stats()["py"]; s.Warm != 0 || len(m.Warm()) != 0 {
		t.Fatalf("stats %+v, %d warm listed; want none warm before the ready command passes", s, len(m.Warm()))
	}
	owner := Owner{AllocID: "owner-1", TaskName: "agent"}
	_, err := m.Claim(ctx(t, 500*time.Millisecond), "py", owner)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "clone still running") {
		t.Fatalf("claim of an unready pool: %v; want a timeout naming the ready command's output", err)
	}
	fr.setDefault(0)
	c, err := m.Claim(ctx(t, 10*time.Second), "py", owner)
	if err != nil {
		t.Fatalf("claim once ready: %v", err)
	}
	if cmd, _ := fr.cmds.Load(c.AllocID); cmd != "test -f local/repo/.git/HEAD" {
		t.Errorf("ready command run: %q; want the template's", cmd)
	}
}

// A sandbox not ready within ready_timeout is replaced and counts as a
// failure of its template, with the command's last output, quoted, in the
// pool's error once it keeps happening.
func TestNotReadyInTimeIsATemplateFailure(t *testing.T) {
	fr := &fakeReady{def: 2, output: "fatal: repository not found\x1b[31m"}
	m, srv := readyManager(t, fr, map[string]string{metaReady: "test -f done", metaReadyInterval: "100ms"},
		Config{Name: "py", Size: 1, Max: 2, ReadyTimeout: 300 * time.Millisecond})
	first := ""
	waitFor(t, 10*time.Second, "the first sandbox dispatched", func() bool {
		c := srv.Children("")
		if len(c) > 0 {
			first = c[0]
		}
		return first != ""
	})
	waitFor(t, 10*time.Second, "a sandbox replaced", func() bool { return m.Stats()["py"].ReadyFailures >= 1 })
	// Said at once, though the pool is not failing yet: claims still wait.
	if s := m.Stats()["py"]; s.ReadyFailures == 1 && !strings.Contains(s.Error, "fatal: repository not found") {
		t.Errorf("pool error after the first sandbox replaced: %q; want the ready command's output", s.Error)
	}
	waitFor(t, 30*time.Second, "3 sandboxes replaced", func() bool { return m.Stats()["py"].ReadyFailures >= 3 })
	if srv.Job(first) != nil {
		t.Errorf("the first sandbox %s is still there; want it replaced", first)
	}
	s := m.Stats()["py"]
	for _, want := range []string{"is failing", "not ready within ready_timeout 300ms", `ready command exited 2: "fatal: repository not found\x1b[31m"`} {
		if !strings.Contains(s.Error, want) {
			t.Errorf("pool error %q; want it to contain %q", s.Error, want)
		}
	}
	if s.Warm != 0 {
		t.Errorf("%d warm; want none", s.Warm)
	}
	_, err := m.Claim(ctx(t, 5*time.Second), "py", Owner{AllocID: "owner-1", TaskName: "agent"})
	if !errors.Is(err, ErrFailing) || !strings.Contains(err.Error(), "repository not found") {
		t.Errorf("claim: %v; want ErrFailing naming the output", err)
	}
}

// A warm sandbox whose ready command fails on a later check is no longer
// handed out, and is replaced.
func TestStaleReadinessReplacesTheSandbox(t *testing.T) {
	fr := &fakeReady{output: "server gone"}
	m, srv := readyManager(t, fr, map[string]string{metaReady: "curl -sf localhost:8080", metaReadyInterval: "100ms"},
		Config{Name: "py", Size: 1, Max: 2})
	waitFor(t, 10*time.Second, "1 warm", func() bool { return m.Stats()["py"].Warm == 1 })
	stale := m.Warm()[0]
	fr.set(stale.AllocID, 1)
	waitFor(t, 10*time.Second, "the stale sandbox replaced", func() bool {
		_, live := srv.LiveAllocs()[stale.AllocID]
		return !live && m.Stats()["py"].Warm == 1
	})
	c, err := m.Claim(ctx(t, 10*time.Second), "py", Owner{AllocID: "owner-1", TaskName: "agent"})
	if err != nil || c.AllocID == stale.AllocID {
		t.Fatalf("claim: %+v, %v; want the replacement", c, err)
	}
	if s := m.Stats()["py"]; s.ReadyFailures != 1 {
		t.Errorf("ready failures %d; want 1", s.ReadyFailures)
	}
}

// The group's Nomad service checks gate readiness: a sandbox is warm once
// each has passed on the client, and one whose check turns critical is
// replaced; the check's output is quoted in the pool's last problem. Once
// warm, the results are read again no more often than the check runs (2s
// here, against 100ms while preparing): a waiting sandbox costs one API
// call per check interval, not ten a second.
func TestServiceChecksGateReadiness(t *testing.T) {
	var mu sync.Mutex
	status := map[string]string{} // by allocation; missing: pending
	srv := pooltest.New()
	t.Cleanup(srv.Close)
	srv.SetParseFunc(readyTemplate(map[string]string{metaReadyInterval: "100ms"}, &api.Service{
		Name: "web", Provider: "nomad", PortLabel: "http",
		Checks: []api.ServiceCheck{{Name: "alive", Type: "http", Path: "/", Interval: 2 * time.Second}},
	}))
	srv.SetCheckResults(func(allocID string) api.AllocCheckStatuses {
		mu.Lock()
		defer mu.Unlock()
		st, ok := status[allocID]
		if !ok {
			return api.AllocCheckStatuses{} // no result yet
		}
		return api.AllocCheckStatuses{"c1": pooltest.CheckResult("web", "alive", st, "HTTP GET http://127.0.0.1:2000/: 503 Service Unavailable Output: warming up")}
	})
	m := newManager(t, srv, func(m *Manager) { m.prepare = func(context.Context, WarmAlloc) error { return nil } },
		Config{Name: "web", Size: 1, Max: 2})
	if err := m.Start(ctx(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	var alloc string
	waitFor(t, 10*time.Second, "1 preparing", func() bool {
		for id := range srv.LiveAllocs() {
			alloc = id
		}
		return m.Stats()["web"].Preparing == 1
	})
	mu.Lock()
	status[alloc] = "failure"
	mu.Unlock()
	waitFor(t, 10*time.Second, "the failing check in the last problem", func() bool {
		e := m.lastErrOf("web")
		return e != nil && strings.Contains(e.Error(), `service check "alive" of service "web": "failure": "HTTP GET`)
	})
	if s := m.Stats()["web"]; s.Warm != 0 {
		t.Fatalf("warm %d while its check fails", s.Warm)
	}
	mu.Lock()
	status[alloc] = "success"
	mu.Unlock()
	waitFor(t, 10*time.Second, "warm", func() bool { return m.Stats()["web"].Warm == 1 })
	before := srv.Calls("GET", "/v1/client/allocation/")
	time.Sleep(time.Second)
	if n := srv.Calls("GET", "/v1/client/allocation/") - before; n > 1 {
		t.Errorf("%d reads of the check results in 1s by a warm sandbox whose check runs every 2s; want at most 1", n)
	}
	mu.Lock()
	status[alloc] = "failure"
	mu.Unlock()
	waitFor(t, 10*time.Second, "the critical one replaced", func() bool {
		_, live := srv.LiveAllocs()[alloc]
		return !live
	})
	for _, w := range m.Warm() {
		if w.AllocID == alloc {
			t.Errorf("%s still warm after its check failed", alloc)
		}
	}
}

// A pool whose template has no readiness check behaves as before: warm once
// prepared, no check run, no call to the client's check results.
func TestNoReadinessCheckNoCalls(t *testing.T) {
	fr := &fakeReady{def: 1}
	m, srv := readyManager(t, fr, nil, Config{Name: "py", Size: 2, Max: 3})
	waitFor(t, 10*time.Second, "2 warm", func() bool { return m.Stats()["py"].Warm == 2 })
	if _, err := m.Claim(ctx(t, 5*time.Second), "py", Owner{AllocID: "owner-1", TaskName: "agent"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "2 warm again", func() bool { return m.Stats()["py"].Warm == 2 })
	if n := fr.runs.Load(); n != 0 {
		t.Errorf("%d ready command runs; want none", n)
	}
	if n := srv.Calls("GET", "/v1/client/allocation/"); n != 0 {
		t.Errorf("%d reads of check results; want none", n)
	}
	if s := m.Stats()["py"]; s.Preparing != 0 || s.ReadyFailures != 0 {
		t.Errorf("stats %+v; want nothing preparing", s)
	}
}

// Bad readiness settings in a template are refused, naming the field.
func TestReadinessSettingsValidated(t *testing.T) {
	for _, tc := range []struct {
		meta map[string]string
		want string
	}{
		{map[string]string{metaReady: "  "}, `meta agentkernel_pool_ready: empty`},
		{map[string]string{metaReady: "true", metaReadyInterval: "soon"}, `meta agentkernel_pool_ready_interval: "soon": want a duration`},
		{map[string]string{metaReady: "true", metaReadyInterval: "1ms"}, `meta agentkernel_pool_ready_interval: 1ms: want 100ms to 1h0m0s`},
	} {
		srv := pooltest.New()
		srv.SetParseFunc(readyTemplate(tc.meta))
		m := newManager(t, srv, func(m *Manager) { m.checkReadyFn = (&fakeReady{}).check }, Config{Name: "py", Size: 1, Max: 2})
		err := m.Start(ctx(t, 10*time.Second))
		if err == nil || !strings.Contains(err.Error(), `task "sandbox": `+tc.want) {
			t.Errorf("meta %v: start: %v; want an error containing %q", tc.meta, err, tc.want)
		}
		m.Stop()
		srv.Close()
	}
	// A Manager that cannot run a ready command refuses a template with one.
	srv := pooltest.New()
	t.Cleanup(srv.Close)
	srv.SetParseFunc(readyTemplate(map[string]string{metaReady: "true"}))
	m := newManager(t, srv, nil, Config{Name: "py", Size: 1, Max: 2})
	if err := m.Start(ctx(t, 10*time.Second)); err == nil || !strings.Contains(err.Error(), "cannot run a ready command") {
		t.Errorf("start without CheckReady: %v", err)
	}
}

// A restarted Manager adopts the ready sandboxes of the one before: their
// tasks started longer ago than ready_timeout, and they are asked before
// anything is decided, so they stay and turn warm.
func TestAdoptedSandboxesAreAskedBeforeTheirTimeout(t *testing.T) {
	fr := &fakeReady{}
	meta := map[string]string{metaReady: "true", metaReadyInterval: "100ms"}
	cfg := Config{Name: "py", Size: 2, Max: 3, ReadyTimeout: 200 * time.Millisecond}
	m, srv := readyManager(t, fr, meta, cfg)
	waitFor(t, 10*time.Second, "2 warm", func() bool { return m.Stats()["py"].Warm == 2 })
	before := srv.LiveAllocs()
	m.Stop()
	time.Sleep(300 * time.Millisecond) // past ready_timeout since their tasks started
	m2 := newManager(t, srv, func(m *Manager) {
		m.prepare = func(context.Context, WarmAlloc) error { return nil }
		m.checkReadyFn = fr.check
	}, cfg)
	if err := m2.Start(ctx(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "2 warm again", func() bool { return m2.Stats()["py"].Warm == 2 })
	if s := m2.Stats()["py"]; s.ReadyFailures != 0 {
		t.Errorf("ready failures %d; want none", s.ReadyFailures)
	}
	for id := range before {
		if _, live := srv.LiveAllocs()[id]; !live {
			t.Errorf("adopted sandbox %s replaced", id)
		}
	}
}
