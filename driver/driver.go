package driver

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/agentkernel/agentkernel-pool/internal/nomadapi"
	"github.com/agentkernel/agentkernel-pool/plugin"
)

// Driver implements plugin.Driver.
type Driver struct {
	logger     hclog.Logger
	newBackend BackendFactory

	ctx    context.Context // lives as long as the plugin process
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	rawConfig []byte
	started   bool // long-lived instance: backend being built or running
	cfg       *Config
	cfgErr    error
	token     *nomadapi.Token // the plugin's ACL token, read by each API call
	backend   Backend
	// backendSet is closed, and replaced, whenever a new backend is set.
	backendSet chan struct{}
	pool       Pool // set once the backend's pools run
	stopBuild  context.CancelFunc
	// startRetry is the pause before starting the pools again after a
	// failed start (a token lacking a right, a template Nomad refused), so
	// an operator's fix takes effect without restarting the agent.
	startRetry time.Duration
	// reloadEvery is how often the files the config names are read again
	// (see reloadLoop); reloading starts with the first real SetConfig.
	reloadEvery time.Duration
	reloading   bool
	reloadFiles string // filesState of the last rebuild reload made

	health  *healthState
	metrics *metrics
	// metricsErr says why /metrics could not be served; in the health
	// description while set.
	metricsErr string
	events     *eventHub
	tasks      *taskStore
	files      *filesWatch

	// The watchdog (watchdog.go) starts with the first tracked task.
	watchdogOnce  sync.Once
	watchdogEvery time.Duration
	watchdogGrace time.Duration
}

// New returns a driver; newBackend nil means the real Nomad API backend.
func New(logger hclog.Logger, newBackend BackendFactory) *Driver {
	if newBackend == nil {
		newBackend = newNomadBackend
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &Driver{
		logger:      logger.Named("driver"),
		newBackend:  newBackend,
		token:       nomadapi.NewToken(""),
		backendSet:  make(chan struct{}),
		ctx:         ctx,
		cancel:      cancel,
		health:      newHealthState(),
		metrics:     newMetrics(),
		events:      newEventHub(),
		tasks:       newTaskStore(),
		startRetry:  defaultStartRetry,
		reloadEvery: reloadEvery,

		watchdogEvery: watchdogEvery,
		watchdogGrace: watchdogGrace,
	}
	d.files = newFilesWatch(d)
	d.metrics.countTasks(d.tasks.count)
	return d
}

var _ plugin.Driver = (*Driver)(nil)

// SetConfig implements plugin.Driver. It never fails on a semantically bad plugin
// block: that would stop the Nomad agent. Problems turn the driver unhealthy.
func (d *Driver) SetConfig(_ context.Context, msgpackConfig []byte, agent *plugin.AgentConfig) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cfg != nil || d.cfgErr != nil {
		if bytes.Equal(msgpackConfig, d.rawConfig) && (agent == nil || d.started) {
			return nil // Nomad sends the same config more than once
		}
	}
	d.rawConfig = append([]byte(nil), msgpackConfig...)
	var raw rawConfig
	if err := plugin.DecodeConfig(msgpackConfig, &raw); err != nil {
		d.cfg, d.cfgErr = nil, err
	} else {
		d.cfg, d.cfgErr = parseConfig(&raw)
	}
	if d.cfg != nil {
		d.token.Set(d.cfg.API.Token)
	}
	if d.cfgErr != nil {
		d.logger.Error("invalid plugin config; driver stays unhealthy", "error", d.cfgErr)
		d.health.set(plugin.HealthUnhealthy, "invalid plugin config: "+oneLine(d.cfgErr))
	}
	if agent == nil {
		return nil // validation instance: no side effects
	}
	d.restartBackendLocked()
	if !d.reloading {
		d.reloading = true
		d.wg.Add(2)
		go func() {
			defer d.wg.Done()
			d.reloadLoop()
		}()
		go func() {
			defer d.wg.Done()
			d.deviceLoop()
		}()
	}
	return nil
}

// restartBackendLocked (re)builds the backend for the current config and starts
// its pools in the background.
func (d *Driver) restartBackendLocked() {
	if d.stopBuild != nil {
		d.stopBuild()
	}
	if d.backend != nil {
		d.backend.Stop()
	}
	d.backend, d.pool = nil, nil
	d.metrics.setPools(nil)
	d.started = true
	if d.cfgErr != nil {
		return
	}
	// Once per process (the address is in the block's text); here, so a
	// config that turns valid on reload serves it too.
	d.metricsErr = ""
	if err := d.metrics.serve(d.cfg.MetricsAddress); err != nil {
		d.metricsErr = fmt.Sprintf("metrics_address %s: %v", d.cfg.MetricsAddress, err)
		d.logger.Error("cannot serve /metrics", "metrics_address", d.cfg.MetricsAddress, "error", err)
	}
	b, err := d.newBackend(d.cfg, d.token, d.logger, d.health.poke, d.metrics)
	if err != nil {
		d.cfgErr = err
		d.logger.Error("cannot build the nomad api backend", "error", err)
		d.health.set(plugin.HealthUnhealthy, "invalid plugin config: "+oneLine(err))
		return
	}
	d.backend = b
	close(d.backendSet)
	d.backendSet = make(chan struct{})
	ctx, cancel := context.WithCancel(d.ctx)
	d.stopBuild = cancel
	d.health.set(plugin.HealthUnhealthy, "starting: connecting to the nomad api")
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		p := d.startPool(ctx, b)
		if p == nil {
			return
		}
		d.mu.Lock()
		if ctx.Err() != nil {
			d.mu.Unlock()
			return
		}
		d.pool = meteredPool{Pool: p, m: d.metrics}
		d.metrics.setPools(p.Stats)
		d.mu.Unlock()
		d.health.set(plugin.HealthHealthy, "ready")
		d.watchAPI(ctx, b)
	}()
}

// startPool starts the backend's pools, and again after every failure until
// it works or ctx ends (then it returns nil). While it fails, the driver is
// unhealthy with the error, which names what to fix.
func (d *Driver) startPool(ctx context.Context, b Backend) Pool {
	for first := true; ; first = false {
		stopProbe := d.probeWhileStarting(ctx, b, first)
		p, err := b.StartPool(ctx)
		stopProbe()
		if err == nil {
			return p
		}
		if ctx.Err() != nil {
			return nil
		}
		d.logger.Error("starting pools failed; will retry", "error", err, "in", d.startRetry)
		d.health.set(plugin.HealthUnhealthy, oneLine(err))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(d.startRetry):
		}
	}
}

// probeWhileStarting probes the Nomad API while StartPool waits for it, so the
// health description says why it waits (API down, token refused) instead of
// only "connecting". On a retry (first false) a working API leaves the last
// start's error in place. The returned func stops the probe; once it returns,
// the probe sets no more health.
func (d *Driver) probeWhileStarting(ctx context.Context, b Backend, first bool) (stop func()) {
	pctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		defer close(done)
		checkAPIEvery(pctx, b, startProbeEvery, func(err error) {
			if err != nil {
				d.health.set(plugin.HealthUnhealthy, "starting: "+oneLine(err))
			} else if first {
				d.health.set(plugin.HealthUnhealthy, "starting: connecting to the nomad api")
			}
		})
	}()
	return func() {
		cancel()
		<-done // a probe in flight sets no health after this returns
	}
}

// watchAPI re-checks the Nomad API so the driver turns unhealthy while it is down
// and healthy again once it is back, with no restart.
func (d *Driver) watchAPI(ctx context.Context, b Backend) {
	checkAPIEvery(ctx, b, apiCheckInterval, func(err error) {
		if err != nil {
			d.health.set(plugin.HealthUnhealthy, oneLine(err))
		} else {
			d.health.set(plugin.HealthHealthy, "ready")
		}
	})
}

// checkAPIEvery checks the Nomad API every interval, each check within
// apiCallTimeout, and reports its answer (nil: the API answered) until ctx
// ends; no report follows the end of ctx.
func checkAPIEvery(ctx context.Context, b Backend, every time.Duration, report func(error)) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cctx, cancel := context.WithTimeout(ctx, apiCallTimeout)
		err := b.Check(cctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		report(err)
	}
}

// current returns the config and backend, or why there is none.
func (d *Driver) current() (*Config, Backend, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cfgErr != nil {
		return nil, nil, errInvalidConfig{d.cfgErr}
	}
	if d.backend == nil {
		return d.cfg, nil, errNotConfigured
	}
	return d.cfg, d.backend, nil
}

// waitBackend returns the backend once there is one other than stale: a
// recovered task waits here while the plugin config is unusable, and a task
// whose backend was replaced (a new plugin config) moves to the new one. It
// returns an error only when ctx ends.
func (d *Driver) waitBackend(ctx context.Context, stale Backend) (Backend, error) {
	for {
		d.mu.Lock()
		b, set := d.backend, d.backendSet
		d.mu.Unlock()
		if b != nil && b != stale {
			return b, nil
		}
		select {
		case <-set:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// currentPool returns the running pools, or why they do not run yet.
func (d *Driver) currentPool() (*Config, Pool, error) {
	cfg, _, err := d.current()
	if err != nil {
		return nil, nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.pool == nil {
		return cfg, nil, errNotReady
	}
	return cfg, d.pool, nil
}

// Shutdown implements plugin.Shutdowner: stop background work; tasks keep running
// inside their sandboxes and are recovered by the next plugin process.
func (d *Driver) Shutdown(context.Context) error {
	d.mu.Lock()
	b := d.backend
	d.backend, d.pool = nil, nil
	d.mu.Unlock()
	d.cancel()
	d.tasks.detachAll()
	d.wg.Wait()
	d.metrics.stop()
	if b != nil {
		b.Stop()
	}
	return nil
}
