package driver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/nomad/api"

	"github.com/agentkernel/agentkernel-pool/driver/sandbox"
	"github.com/agentkernel/agentkernel-pool/driver/shipper"
	"github.com/agentkernel/agentkernel-pool/internal/nomadapi"
	"github.com/agentkernel/agentkernel-pool/plugin"
	"github.com/agentkernel/agentkernel-pool/pool"
)

// fakePool hands out allocations "a1", "a2", ... and records releases. With
// dir set (the client's alloc root), a claimed sandbox has its dirs there, as
// a running allocation does.
type fakePool struct {
	dir      string
	mu       sync.Mutex
	next     int
	claimErr error
	poolErr  string // Stats.Error of pool "dev"
	miss     bool
	claims   map[string]*pool.Claim
	released []string
	adopted  []string
	adoptErr error
	// warm is what Warm lists; ClaimAlloc hands out one of them when asked.
	warm []pool.WarmAlloc
}

func newFakePool() *fakePool { return &fakePool{claims: map[string]*pool.Claim{}} }

func (p *fakePool) Claim(_ context.Context, name string, owner pool.Owner) (*pool.Claim, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.claimErr != nil {
		return nil, p.claimErr
	}
	p.next++
	c := &pool.Claim{Pool: name, AllocID: fmt.Sprintf("a%d-0000-0000-0000-000000000000", p.next), JobID: fmt.Sprintf("warm/dispatch-%d", p.next),
		TaskName: "sandbox", NodeID: "node1", Owner: owner, Hit: !p.miss, ClaimedAt: time.Now()}
	return p.handOut(c)
}

// handOut records c as claimed and, with dir set, makes its sandbox's dirs.
func (p *fakePool) handOut(c *pool.Claim) (*pool.Claim, error) {
	p.claims[c.AllocID] = c
	if p.dir != "" {
		for _, d := range []string{"sandbox/local", "sandbox/secrets", "alloc/data"} {
			if err := os.MkdirAll(filepath.Join(p.dir, c.AllocID, d), 0o755); err != nil {
				return nil, err
			}
		}
	}
	return c, nil
}

func (p *fakePool) ClaimAlloc(ctx context.Context, name, allocID string, owner pool.Owner) (*pool.Claim, error) {
	p.mu.Lock()
	i := slices.IndexFunc(p.warm, func(w pool.WarmAlloc) bool { return w.AllocID == allocID && w.Pool == name })
	if i < 0 || p.claimErr != nil {
		p.mu.Unlock()
		return p.Claim(ctx, name, owner)
	}
	w := p.warm[i]
	p.warm = slices.Delete(p.warm, i, i+1)
	defer p.mu.Unlock()
	return p.handOut(&pool.Claim{Pool: name, AllocID: w.AllocID, JobID: w.JobID, TaskName: w.TaskName, NodeID: "node1", Owner: owner, Hit: true, ClaimedAt: time.Now()})
}

func (p *fakePool) Release(_ context.Context, c *pool.Claim) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.claims, c.AllocID)
	p.released = append(p.released, c.AllocID)
	return nil
}

func (p *fakePool) Adopt(_ context.Context, c *pool.Claim) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.adoptErr != nil {
		return p.adoptErr
	}
	p.adopted = append(p.adopted, c.AllocID)
	return nil
}

func (p *fakePool) Stats() map[string]pool.Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return map[string]pool.Stats{"dev": {Size: 2, Max: 8, Target: 3, Warm: 2, Claimed: len(p.claims), Error: p.poolErr}}
}

func (p *fakePool) Warm() []pool.WarmAlloc {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.warm)
}

// adoptedIDs lists the allocations whose claims were adopted.
func (p *fakePool) adoptedIDs() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.adopted)
}

// claimIDs lists the claimed allocations, in claim order.
func (p *fakePool) claimIDs() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	ids := make([]string, 0, p.next)
	for i := 1; i <= p.next; i++ {
		ids = append(ids, fmt.Sprintf("a%d-0000-0000-0000-000000000000", i))
	}
	return ids
}

func (p *fakePool) releasedIDs() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.released...)
}

// fakeRun is one launched command inside a fake sandbox.
type fakeRun struct {
	spec    sandbox.Spec
	stdout  string
	exit    chan sandbox.ExitStatus
	signals []string
}

// fakeRunner stands in for the sandbox runner: launched commands print their
// spec's env value OUT and exit when told to, or on a signal.
type fakeRunner struct {
	mu        sync.Mutex
	launchErr error
	startErr  error // the launch session's answer, after Start returned
	runs      map[string]*fakeRun
	allocGone map[string]chan struct{}
	execs     []string // the sandbox allocation of every exec, in order
	ended     []string // the sandbox allocation of every End, in order
	onEnd     func(ref sandbox.Ref, runID string) (int, error)

	execOut func(stdout, stderr io.Writer) // when set, what an exec prints

	// hostDir, when set (before any start), is the client's alloc root the
	// fake sandboxes share with the host, as raw_exec ones do: their launch
	// sessions say so.
	hostDir string
}

func newFakeRunner() *fakeRunner {
	return &fakeRunner{runs: map[string]*fakeRun{}, allocGone: map[string]chan struct{}{}}
}

// Start fails with launchErr; with startErr it returns and the launch
// session's answer is that error.
func (r *fakeRunner) Start(_ context.Context, ref sandbox.Ref, s sandbox.Spec) (<-chan error, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.launchErr != nil {
		return nil, r.launchErr
	}
	if err := os.MkdirAll(ref.RunDir(s.ID), 0o755); err != nil { // as the real Start makes it
		return nil, err
	}
	started := make(chan error, 1)
	started <- r.startErr
	if r.startErr != nil {
		return started, nil
	}
	r.runs[s.ID] = &fakeRun{spec: s, stdout: s.Env["OUT"], exit: make(chan sandbox.ExitStatus, 1)}
	if _, ok := r.allocGone[ref.AllocID]; !ok {
		r.allocGone[ref.AllocID] = make(chan struct{})
	}
	return started, nil
}

func (r *fakeRunner) run(id string) *fakeRun {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.runs[id]
}

func (r *fakeRunner) Follow(ctx context.Context, _ sandbox.Ref, runID string, from sandbox.Offsets, stdout, _ io.Writer, progress func(sandbox.Offsets)) (sandbox.ExitStatus, error) {
	run := r.run(runID)
	if run == nil {
		return sandbox.ExitStatus{}, errors.New("no such run")
	}
	if int(from.Stdout) < len(run.stdout) {
		n, _ := io.WriteString(stdout, run.stdout[from.Stdout:])
		progress(sandbox.Offsets{Stdout: from.Stdout + int64(n)})
	}
	select {
	case st := <-run.exit:
		run.exit <- st // later followers see it too
		return st, nil
	case <-ctx.Done():
		return sandbox.ExitStatus{}, ctx.Err()
	}
}

func (r *fakeRunner) Signal(_ context.Context, _ sandbox.Ref, runID, sig string) error {
	run := r.run(runID)
	if run == nil {
		return errors.New("no such run")
	}
	r.mu.Lock()
	run.signals = append(run.signals, sig)
	r.mu.Unlock()
	num := map[string]int{"SIGINT": 2, "SIGTERM": 15, "SIGKILL": 9}[sig]
	if num != 0 && sig != "SIGUSR1" {
		select {
		case run.exit <- sandbox.ExitStatus{Code: 128 + num, Signal: num}:
		default:
		}
	}
	return nil
}

func (r *fakeRunner) Exec(_ context.Context, ref sandbox.Ref, runID string, cmd []string, _ bool, stdin io.Reader, stdout, stderr io.Writer, _ <-chan api.TerminalSize) (int, error) {
	r.mu.Lock()
	r.execs = append(r.execs, ref.AllocID)
	r.mu.Unlock()
	if r.execOut != nil {
		r.execOut(stdout, stderr)
		return 0, nil
	}
	run := r.run(runID)
	in, _ := io.ReadAll(stdin)
	fmt.Fprintf(stdout, "%s|%s|%s", cmd[0], in, run.spec.Env["OUT"])
	return len(cmd), nil
}

// End records the sandbox it ends, and runs onEnd when set (a test's look
// at what is done when the sandbox's processes are ended).
func (r *fakeRunner) End(ref sandbox.Ref, runID string, nsPID int) (int, error) {
	r.mu.Lock()
	r.ended = append(r.ended, ref.AllocID)
	onEnd := r.onEnd
	r.mu.Unlock()
	if onEnd != nil {
		return onEnd(ref, runID)
	}
	return 0, nil
}

func (r *fakeRunner) LaunchState(string) (string, bool) { return "", false }

func (r *fakeRunner) SessionInfo(allocID string) (sandbox.SessionInfo, bool) {
	if r.hostDir != "" {
		return sandbox.SessionInfo{UID: os.Getuid(), GID: os.Getgid(), AllocDir: filepath.Join(r.hostDir, allocID, "alloc")}, true
	}
	return sandbox.SessionInfo{UID: -1, GID: -1}, false
}

// kill makes the fake sandbox allocation die from outside.
func (r *fakeRunner) kill(allocID string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	close(r.allocGone[allocID])
}

func (r *fakeRunner) AllocDone(ctx context.Context, _, allocID string) (string, error) {
	r.mu.Lock()
	ch := r.allocGone[allocID]
	r.mu.Unlock()
	if ch == nil {
		<-ctx.Done()
		return "", ctx.Err()
	}
	select {
	case <-ch:
		return "allocation is failed", nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// fakeNomad is a Backend over a fakeRunner: its pools come from startPool, and
// output is shipped in this process.
type fakeNomad struct {
	*fakeRunner
	startPool func(context.Context) (Pool, error)
	check     func(context.Context) error // nil: the API answers
}

var _ Backend = (*fakeNomad)(nil)

func (n *fakeNomad) StartPool(ctx context.Context) (Pool, error) { return n.startPool(ctx) }

func (n *fakeNomad) Check(ctx context.Context) error {
	if n.check == nil {
		return nil
	}
	return n.check(ctx)
}

func (n *fakeNomad) Ship(ctx context.Context, job shipper.Job) (sandbox.ExitStatus, error) {
	return shipper.Copy(ctx, n.Follow, job)
}

func (n *fakeNomad) Usage(context.Context, string, string, string) (*plugin.TaskResourceUsage, error) {
	return nil, nil
}

func (n *fakeNomad) Stop() {}

// fakeBackend builds a backend over the fakes; check, when set, answers health probes.
func fakeBackend(p *fakePool, r *fakeRunner, check func(context.Context) error) BackendFactory {
	return func(*Config, *nomadapi.Token, hclog.Logger, func(), Metrics) (Backend, error) {
		return &fakeNomad{fakeRunner: r, check: check, startPool: func(context.Context) (Pool, error) { return p, nil }}, nil
	}
}
