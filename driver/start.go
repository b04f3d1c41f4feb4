package driver

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/agentkernel/agentkernel-pool/driver/sandbox"
	"github.com/agentkernel/agentkernel-pool/plugin"
	"github.com/agentkernel/agentkernel-pool/pool"
)

// StartTask implements plugin.Driver: claim a warm allocation of the task's pool and
// start the task's command inside it.
func (d *Driver) StartTask(ctx context.Context, cfg *plugin.TaskConfig) (_ *plugin.TaskHandle, _ *plugin.NetworkOverride, err error) {
	entered := time.Now()
	req, err := d.checkStart(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, req.pool.ClaimTimeout)
	defer cancel()
	owner := pool.Owner{AllocID: cfg.AllocID, TaskName: cfg.Name, TaskID: cfg.ID, JobID: cfg.JobID, Namespace: cfg.Namespace}
	begin := time.Now()
	claim, err := d.claim(cctx, req.pl, cfg, req.tc.Pool, req.want, owner)
	if err != nil {
		d.emit(cfg, fmt.Sprintf("No sandbox from pool %s after %s", req.tc.Pool, time.Since(begin).Round(time.Millisecond)), map[string]string{"pool": req.tc.Pool})
		return nil, nil, plugin.Recoverable(err) // the pool's error names the pool and the call
	}
	latency := time.Since(begin)
	defer func() {
		if err != nil { // a failed start gives its sandbox back to no one: purge it
			rctx, rcancel := context.WithTimeout(context.Background(), apiCallTimeout)
			defer rcancel()
			if rerr := req.pl.Release(rctx, claim); rerr != nil {
				d.logger.Error("release claim after failed start", "alloc_id", claim.AllocID, "error", rerr)
			}
		}
	}()
	d.emitClaim(cfg, claim, latency)
	if cfg.User != "" {
		d.emit(cfg, fmt.Sprintf("Task user %q not used: the command runs as sandbox %s's user, set in pool %s's warm template", cfg.User, short(claim.AllocID), req.tc.Pool), nil)
	}
	crashAfterClaim()
	h := newTaskHandle(cfg, req, claim, latency)
	// The hand-out mark, on the host, before anything of the task enters
	// the sandbox: a plugin restarted before the claim's record lands
	// never hands this sandbox out again (claim.go).
	if err := (sandbox.Ref{AllocID: claim.AllocID, HostAllocDir: h.state.HostAllocDir}).Mark(); err != nil {
		return nil, nil, plugin.Recoverable(fmt.Errorf("start task in pool %q: %w", req.tc.Pool, err))
	}
	filesBegin := time.Now()
	started, launchBegin, err := d.launch(ctx, h, req.tc)
	if err != nil {
		return nil, nil, err
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

// startRequest is a start that passed StartTask's checks: the task's config,
// the plugin config and pools it runs under, and the sandbox the scheduler
// reserved for it ("" when none).
type startRequest struct {
	tc   TaskConfig
	conf *Config
	pl   Pool
	pool pool.Config
	want string
}

// checkStart decodes the task's config and checks it against the plugin's,
// waiting up to backendWait for a plugin still starting. Its errors name the
// field at fault; one the plugin may outgrow (still starting) is recoverable.
func (d *Driver) checkStart(ctx context.Context, cfg *plugin.TaskConfig) (startRequest, error) {
	var req startRequest
	if _, ok := d.tasks.get(cfg.ID); ok {
		return req, fmt.Errorf("task %q already started", cfg.ID)
	}
	if err := plugin.DecodeConfig(cfg.DriverConfig, &req.tc); err != nil {
		return req, fmt.Errorf("decode task config: %w", err)
	}
	conf, pl, err := d.waitPool(ctx, backendWait)
	if err != nil {
		var bad errInvalidConfig
		if errors.As(err, &bad) {
			return req, err
		}
		return req, plugin.Recoverable(err)
	}
	req.conf, req.pl = conf, pl
	tc := req.tc
	var ok bool
	if req.pool, ok = conf.Pool(tc.Pool); !ok {
		return req, fmt.Errorf("config: pool %q is not configured on this node; pools here: %s", tc.Pool, strings.Join(conf.PoolNames(), ", "))
	}
	if !conf.Serves(tc.Pool, cfg.Namespace) {
		return req, fmt.Errorf("config: pool %q does not serve namespace %q; it serves namespaces: %s",
			tc.Pool, cfg.Namespace, strings.Join(conf.Namespaces[tc.Pool], ", "))
	}
	if tc.Command == "" && len(tc.Args) > 0 {
		return req, errors.New("config: args given without command")
	}
	req.want, err = reservedSandbox(cfg, tc.Pool)
	return req, err
}

// newTaskHandle is the handle of a task that claimed its sandbox, with the
// state a restarted plugin recovers it from.
func newTaskHandle(cfg *plugin.TaskConfig, req startRequest, claim *pool.Claim, latency time.Duration) *taskHandle {
	return &taskHandle{
		cfg:   cfg,
		claim: claim,
		done:  make(chan struct{}),
		state: driverState{
			Claim:        claimStateOf(claim),
			Namespace:    req.conf.Namespace,
			HostAllocDir: filepath.Join(filepath.Dir(cfg.AllocDir), claim.AllocID),
			RunID:        runID(cfg),
			Command:      req.tc.Command != "",
			OffsetsPath:  offsetsPath(cfg, runID(cfg)),
			StartedAt:    time.Now(),
			ClaimLatency: latency,
		},
	}
}

// launch carries the task's files into its sandbox and starts its command
// there, within launchTimeout; started delivers the outcome of the command's
// start, launchBegin is when the files were in.
func (d *Driver) launch(ctx context.Context, h *taskHandle, tc TaskConfig) (started <-chan error, launchBegin time.Time, err error) {
	cfg := h.cfg
	spec := sandbox.Spec{ID: h.state.RunID, Command: tc.Command, Args: tc.Args, Env: sandboxEnv(cfg.Env)}
	lctx, lcancel := context.WithTimeout(ctx, launchTimeout)
	defer lcancel()
	_, b, err := d.current()
	if err != nil {
		return nil, time.Time{}, plugin.Recoverable(err)
	}
	if cfg.AllocDir != "" { // a task without task dirs has no files to carry
		h.chooseFiles(b)
		if h.state.FilesWay == filesDirect {
			spec.Env = directEnv(cfg)
		}
		if err := d.copyIn(h); err != nil {
			return nil, time.Time{}, err
		}
	}
	launchBegin = time.Now()
	started, err = b.Start(lctx, h.state.ref(), spec)
	if err != nil {
		return nil, launchBegin, plugin.Recoverable(fmt.Errorf("start task in allocation %s of pool %q: %w", short(h.claim.AllocID), tc.Pool, err))
	}
	return started, launchBegin, nil
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
