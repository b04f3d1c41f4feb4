package driver

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/agentkernel/agentkernel-pool/driver/allocfs"
	"github.com/agentkernel/agentkernel-pool/driver/sandbox"
	"github.com/agentkernel/agentkernel-pool/plugin"
	"github.com/agentkernel/agentkernel-pool/pool"
)

// StartTask implements plugin.Driver: claim a warm allocation of the task's pool and
// start the task's command inside it.
func (d *Driver) StartTask(ctx context.Context, cfg *plugin.TaskConfig) (_ *plugin.TaskHandle, _ *plugin.NetworkOverride, err error) {
	entered := time.Now()
	if _, ok := d.tasks.get(cfg.ID); ok {
		return nil, nil, fmt.Errorf("task %q already started", cfg.ID)
	}
	var tc TaskConfig
	if err := plugin.DecodeConfig(cfg.DriverConfig, &tc); err != nil {
		return nil, nil, fmt.Errorf("decode task config: %w", err)
	}
	conf, pl, err := d.waitPool(ctx, backendWait)
	if err != nil {
		var bad errInvalidConfig
		if errors.As(err, &bad) {
			return nil, nil, err
		}
		return nil, nil, plugin.Recoverable(err)
	}
	pc, ok := conf.Pool(tc.Pool)
	if !ok {
		return nil, nil, fmt.Errorf("config: pool %q is not configured on this node; pools here: %s", tc.Pool, strings.Join(conf.PoolNames(), ", "))
	}
	if !conf.Serves(tc.Pool, cfg.Namespace) {
		return nil, nil, fmt.Errorf("config: pool %q does not serve namespace %q; it serves namespaces: %s",
			tc.Pool, cfg.Namespace, strings.Join(conf.Namespaces[tc.Pool], ", "))
	}
	if tc.Command == "" && len(tc.Args) > 0 {
		return nil, nil, errors.New("config: args given without command")
	}
	want, err := reservedSandbox(cfg, tc.Pool)
	if err != nil {
		return nil, nil, err
	}

	cctx, cancel := context.WithTimeout(ctx, pc.ClaimTimeout)
	defer cancel()
	owner := pool.Owner{AllocID: cfg.AllocID, TaskName: cfg.Name, TaskID: cfg.ID, JobID: cfg.JobID, Namespace: cfg.Namespace}
	begin := time.Now()
	claim, err := d.claim(cctx, pl, cfg, tc.Pool, want, owner)
	if err != nil {
		d.emit(cfg, fmt.Sprintf("No sandbox from pool %s after %s", tc.Pool, time.Since(begin).Round(time.Millisecond)), map[string]string{"pool": tc.Pool})
		return nil, nil, plugin.Recoverable(err) // the pool's error names the pool and the call
	}
	latency := time.Since(begin)
	defer func() {
		if err != nil { // a failed start gives its sandbox back to no one: purge it
			rctx, rcancel := context.WithTimeout(context.Background(), apiCallTimeout)
			defer rcancel()
			if rerr := pl.Release(rctx, claim); rerr != nil {
				d.logger.Error("release claim after failed start", "alloc_id", claim.AllocID, "error", rerr)
			}
		}
	}()
	d.emitClaim(cfg, claim, latency)
	if cfg.User != "" {
		d.emit(cfg, fmt.Sprintf("Task user %q not used: the command runs as sandbox %s's user, set in pool %s's warm template", cfg.User, short(claim.AllocID), tc.Pool), nil)
	}
	crashAfterClaim()
	// The hand-out mark, on the host, before anything of the task enters
	// the sandbox: a plugin restarted before the claim's record lands
	// never hands this sandbox out again (claim.go).
	hostAllocDir := filepath.Join(filepath.Dir(cfg.AllocDir), claim.AllocID)
	if err := (sandbox.Ref{AllocID: claim.AllocID, HostAllocDir: hostAllocDir}).Mark(); err != nil {
		return nil, nil, plugin.Recoverable(fmt.Errorf("start task in pool %q: %w", tc.Pool, err))
	}

	h := &taskHandle{
		cfg:   cfg,
		claim: claim,
		done:  make(chan struct{}),
		state: driverState{
			Claim:        claimStateOf(claim),
			Namespace:    conf.Namespace,
			HostAllocDir: hostAllocDir,
			RunID:        runID(cfg),
			Command:      tc.Command != "",
			OffsetsPath:  offsetsPath(cfg, runID(cfg)),
			StartedAt:    time.Now(),
			ClaimLatency: latency,
		},
	}
	spec := sandbox.Spec{ID: h.state.RunID, Command: tc.Command, Args: tc.Args, Env: sandboxEnv(cfg.Env)}
	lctx, lcancel := context.WithTimeout(ctx, launchTimeout)
	defer lcancel()
	_, b, err := d.current()
	if err != nil {
		return nil, nil, plugin.Recoverable(err)
	}
	filesBegin := time.Now()
	if cfg.AllocDir != "" { // a task without task dirs has no files to carry
		h.chooseFiles(b)
		if h.state.FilesWay == filesDirect {
			spec.Env = directEnv(cfg)
		}
		if err := d.copyIn(h); err != nil {
			return nil, nil, err
		}
	}
	launchBegin := time.Now()
	started, err := b.Start(lctx, h.state.ref(), spec)
	if err != nil {
		return nil, nil, plugin.Recoverable(fmt.Errorf("start task in allocation %s of pool %q: %w", short(claim.AllocID), tc.Pool, err))
	}
	launched := time.Now()
	th, err := h.handle()
	if err != nil {
		return nil, nil, err
	}
	d.track(h, started)
	d.logger.Debug("started task", "task_id", cfg.ID, "sandbox_alloc_id", claim.AllocID, "setup", begin.Sub(entered), "claim", latency,
		"events", filesBegin.Sub(begin)-latency, "files", launchBegin.Sub(filesBegin), "launch", launched.Sub(launchBegin), "track", time.Since(launched), "total", time.Since(entered))
	return th, nil, nil
}

func (d *Driver) emitClaim(cfg *plugin.TaskConfig, c *pool.Claim, latency time.Duration) {
	ann := map[string]string{"pool": c.Pool, "sandbox_alloc_id": c.AllocID, "claim_latency": latency.String()}
	if c.Hit {
		d.emit(cfg, fmt.Sprintf("Claimed warm sandbox %s from pool %s in %s", short(c.AllocID), c.Pool, latency.Round(time.Microsecond)), ann)
		return
	}
	ann["waited"] = c.Waited.String()
	d.emit(cfg, fmt.Sprintf("Pool %s miss: started a sandbox cold and waited %s for %s", c.Pool, latency.Round(time.Millisecond), short(c.AllocID)), ann)
}

// track registers a task and follows it until it exits or the plugin stops.
// started, when not nil, delivers the outcome of the command's start (the
// launch session's answer, which StartTask does not wait for).
func (d *Driver) track(h *taskHandle, started <-chan error) {
	ctx, cancel := context.WithCancel(d.ctx)
	h.cancel = cancel
	d.tasks.set(h.cfg.ID, h)
	if h.state.Files {
		d.files.add(h)
	}
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		defer d.files.remove(h.cfg.ID)
		d.watch(ctx, h, started)
	}()
	d.startWatchdog()
}

// watch sets the task's exit result from its command, or from the death of its
// sandbox allocation, whichever comes first. A recovered task waits here for a
// backend while there is none (plugin config unusable); its command runs on.
func (d *Driver) watch(ctx context.Context, h *taskHandle, started <-chan error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ref := h.state.ref()
	if started != nil {
		// Following starts once the command has (the run's files are
		// there from its first byte, so nothing is missed meanwhile).
		h.setStep(stepLaunch)
		select {
		case err := <-started:
			if err != nil {
				// The command never started: the task fails with the
				// reason (and is started again per its restart policy).
				d.emit(h.cfg, upperFirst(err.Error()), map[string]string{"sandbox_alloc_id": ref.AllocID})
				d.endSandboxNow(h)
				h.setExit(plugin.ExitResult{ExitCode: 1, Err: err.Error()})
				return
			}
		case <-ctx.Done():
			return
		}
	}
	h.setStep(stepBackend)
	b, err := d.waitBackend(ctx, nil)
	if err != nil {
		return // plugin shutting down or task destroyed: the command lives on
	}
	// A sandbox that dies cuts the shipping short: see sandboxDied.
	shipCtx, cutShipping := context.WithCancel(ctx)
	defer cutShipping()
	shipped := make(chan bool, 1) // true: Ship saw the run's end, and its exit is reported below
	d.wg.Add(2)
	go func() {
		defer d.wg.Done()
		d.keepClaim(ctx, h, b)
	}()
	go func() {
		defer d.wg.Done()
		reason, err := d.allocDone(ctx, b, ref)
		if err != nil {
			return
		}
		h.mu.Lock()
		ending := h.ending
		h.mu.Unlock()
		if ending {
			return // the plugin ended the sandbox; the exit is reported there
		}
		d.sandboxDied(h, reason, cutShipping, shipped)
	}()
	if !h.state.Command {
		// The task holds its sandbox until stopped or until the sandbox dies.
		h.setStep(stepHold)
		select {
		case <-ctx.Done():
		case <-h.done:
		}
		return
	}
	h.setStep(stepShip)
	st, err := b.Ship(shipCtx, h.shipJob())
	cut := err != nil && shipCtx.Err() != nil
	shipped <- !cut
	if ctx.Err() != nil {
		return // plugin shutting down or task destroyed: the command lives on
	}
	if cut {
		return // the sandbox died: sandboxDied reports the exit
	}
	// Nothing of the sandbox runs on once the exit is reported (end.go).
	endErr := d.endSandbox(h, b)
	if errors.Is(err, allocfs.ErrTampered) {
		d.tampered(h, err)
		return
	}
	if err != nil {
		h.setExit(plugin.ExitResult{ExitCode: 1, Err: fmt.Sprintf("follow command in sandbox %s: %v", short(ref.AllocID), err)})
		return
	}
	if endErr != nil {
		h.setExit(plugin.ExitResult{ExitCode: max(st.Code, 1), Signal: st.Signal, Err: endErr.Error()})
		return
	}
	h.setStep(stepResults)
	d.copyOut(h) // before the exit is reported: poststop tasks read the results
	h.setExit(plugin.ExitResult{ExitCode: st.Code, Signal: st.Signal})
}

// tampered ends a task whose command rewrote the plugin's files to reach the
// host: nothing it planted was read; the task fails saying so, and Destroy
// purges the sandbox.
func (d *Driver) tampered(h *taskHandle, err error) {
	ref := h.state.ref()
	d.logger.Warn("sandbox tampered with its run files; ending the task", "task_id", h.cfg.ID, "sandbox_alloc_id", ref.AllocID, "error", err)
	d.emit(h.cfg, upperFirst(err.Error()), map[string]string{"sandbox_alloc_id": ref.AllocID})
	h.setExit(plugin.ExitResult{ExitCode: 1, Err: err.Error()})
}

// allocDone waits until the task's sandbox allocation stops and says why. A
// new token changes no backend; only a new plugin config replaces it, and then
// the wait moves to the new one.
func (d *Driver) allocDone(ctx context.Context, b Backend, ref sandbox.Ref) (string, error) {
	for {
		reason, err := b.AllocDone(ctx, ref.Namespace, ref.AllocID)
		if err == nil || ctx.Err() != nil {
			return reason, err
		}
		if b, err = d.waitBackend(ctx, b); err != nil {
			return "", err
		}
	}
}

// runID names the task's run inside the sandbox; unique per start.
func runID(cfg *plugin.TaskConfig) string {
	id := cfg.ID
	if i := strings.LastIndex(id, "/"); i >= 0 && len(cfg.AllocID) >= 8 {
		id = cfg.AllocID[:8] + "-" + id[i+1:]
	}
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, id)
}

// sandboxEnv is the task's env as it should reach commands inside the sandbox:
// the sandbox keeps its own directory variables, which point into its filesystem.
func sandboxEnv(env map[string]string) map[string]string {
	out := make(map[string]string, len(env))
	for k, v := range env {
		switch k {
		case "NOMAD_ALLOC_DIR", "NOMAD_TASK_DIR", "NOMAD_SECRETS_DIR":
			continue
		}
		out[k] = v
	}
	return out
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

func short(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}
