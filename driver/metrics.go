package driver

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/agentkernel/agentkernel-pool/internal/nomadapi"
	"github.com/agentkernel/agentkernel-pool/pool"
)

// Prometheus metrics, served on the plugin option metrics_address. Claims are
// counted where the driver makes them (every StartTask that reaches a claim
// counts once, under one outcome), so claims by outcome add up to the starts.
// The pool gauges are read from the pools' own counts at each scrape, so they
// cannot drift from the node attributes.

const metricsNamespace = "agentkernel_pool"

// Claim outcomes.
const (
	outcomeHit     = "hit"     // a warm allocation was there
	outcomeMiss    = "miss"    // one was started and waited for
	outcomeTimeout = "timeout" // none came within claim_timeout
	outcomeError   = "error"   // the claim failed otherwise (failing pool, API down)
)

// metrics is the driver's registry; it lives as long as the plugin process.
type metrics struct {
	reg          *prometheus.Registry
	claims       *prometheus.CounterVec
	claimLatency *prometheus.HistogramVec
	warmup       *prometheus.HistogramVec // pool.Observer
	ready        *prometheus.HistogramVec // pool.Observer
	dispatches   *prometheus.CounterVec
	purges       *prometheus.CounterVec
	apiRequests  *prometheus.CounterVec   // nomadapi.CallObserver
	apiLatency   *prometheus.HistogramVec // nomadapi.CallObserver

	mu     sync.Mutex
	pools  func() map[string]pool.Stats // nil while no pools run
	server *http.Server
	addr   net.Addr
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		claims: counterVec("claims_total",
			"Claims of warm sandboxes by task starts, by pool and outcome (hit, miss, timeout, error).",
			"pool", "outcome"),
		claimLatency: histogramVec("claim_duration_seconds",
			"Time a task start spent claiming a sandbox, by pool and outcome.",
			[]float64{.002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
			"pool", "outcome"),
		warmup: histogramVec("warmup_duration_seconds",
			"Time a warm sandbox this plugin dispatched took from its dispatch to warm (placed, running, launch session open, ready), by pool.",
			[]float64{.25, .5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300},
			"pool"),
		ready: histogramVec("ready_duration_seconds",
			"Time a sandbox of a pool with a readiness check took from its warm task's start to its first passing check (the preparation part of the warm-up), by pool.",
			[]float64{.1, .25, .5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300, 600},
			"pool"),
		dispatches: counterVec("dispatches_total",
			"Warm sandboxes dispatched, by pool and result (ok, error).",
			"pool", "result"),
		purges: counterVec("purges_total",
			"Sandbox jobs purged (used, dead, surplus or stale), by pool and result (ok, error).",
			"pool", "result"),
		apiRequests: counterVec("nomad_api_requests_total",
			"Requests this plugin sent to the Nomad API (each retry counts), by operation (jobs.dispatch, variables.create, allocations.watch, alloc.exec, ...) and result (ok, 4xx, 5xx, error: no answer).",
			"operation", "result"),
		apiLatency: histogramVec("nomad_api_request_duration_seconds",
			"Time a Nomad API request took to its answer, by operation and result. A *.watch is a blocking query (it waits for a change) and alloc.exec.session an exec held open: theirs is the wait or the session.",
			[]float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300},
			"operation", "result"),
	}
	m.reg.MustRegister(m.claims, m.claimLatency, m.warmup, m.ready, m.dispatches, m.purges, m.apiRequests, m.apiLatency, poolCollector{m})
	return m
}

// counterVec is a counter of the plugin's namespace with the given labels.
func counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: metricsNamespace, Name: name, Help: help}, labels)
}

// histogramVec is a histogram of the plugin's namespace with the given
// buckets and labels.
func histogramVec(name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	return prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: metricsNamespace, Name: name, Help: help, Buckets: buckets}, labels)
}

var (
	_ pool.Observer         = (*metrics)(nil)
	_ nomadapi.CallObserver = (*metrics)(nil)
)

// APICall implements nomadapi.CallObserver.
func (m *metrics) APICall(op, result string, took time.Duration) {
	m.apiRequests.WithLabelValues(op, result).Inc()
	m.apiLatency.WithLabelValues(op, result).Observe(took.Seconds())
}

// countTasks makes the running_tasks gauge read n at each scrape.
func (m *metrics) countTasks(n func() int) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: metricsNamespace, Name: "running_tasks",
		Help: "Sandbox tasks this plugin runs or holds now.",
	}, func() float64 { return float64(n()) }))
}

// WarmedUp implements pool.Observer.
func (m *metrics) WarmedUp(poolName string, took time.Duration) {
	m.warmup.WithLabelValues(poolName).Observe(took.Seconds())
}

// Ready implements pool.Observer.
func (m *metrics) Ready(poolName string, took time.Duration) {
	m.ready.WithLabelValues(poolName).Observe(took.Seconds())
}

// Dispatched implements pool.Observer.
func (m *metrics) Dispatched(poolName string, err error) {
	m.dispatches.WithLabelValues(poolName, result(err)).Inc()
}

// Purged implements pool.Observer.
func (m *metrics) Purged(poolName string, err error) {
	m.purges.WithLabelValues(poolName, result(err)).Inc()
}

func result(err error) string {
	if err != nil {
		return "error"
	}
	return "ok"
}

// observeClaim records one claim of a task start.
func (m *metrics) observeClaim(poolName string, c *pool.Claim, err error, took time.Duration) {
	outcome := outcomeError
	switch {
	case err == nil && c.Hit:
		outcome = outcomeHit
	case err == nil:
		outcome = outcomeMiss
	case errors.Is(err, context.DeadlineExceeded):
		outcome = outcomeTimeout
	}
	m.claims.WithLabelValues(poolName, outcome).Inc()
	m.claimLatency.WithLabelValues(poolName, outcome).Observe(took.Seconds())
}

// setPools sets where the pool gauges come from; nil while no pools run.
func (m *metrics) setPools(stats func() map[string]pool.Stats) {
	m.mu.Lock()
	m.pools = stats
	m.mu.Unlock()
}

// serve starts the /metrics listener on addr, once per process: the
// plugin block's text (and so the address) only changes with an agent
// restart, which starts a new plugin process.
func (m *metrics) serve(addr string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.server != nil || addr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	m.server = &http.Server{Handler: mux, ReadHeaderTimeout: metricsReadHeaderTimeout, WriteTimeout: metricsWriteTimeout}
	m.addr = ln.Addr()
	go func() { _ = m.server.Serve(ln) }() // ends with Shutdown
	return nil
}

// stop closes the listener and waits up to metricsStopWait for scrapes in flight.
func (m *metrics) stop() {
	m.mu.Lock()
	srv := m.server
	m.mu.Unlock()
	if srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), metricsStopWait)
	defer cancel()
	_ = srv.Shutdown(ctx)
}

// meteredPool counts the claims of task starts.
type meteredPool struct {
	Pool
	m *metrics
}

func (p meteredPool) Claim(ctx context.Context, name string, owner pool.Owner) (*pool.Claim, error) {
	began := time.Now()
	c, err := p.Pool.Claim(ctx, name, owner)
	p.m.observeClaim(name, c, err, time.Since(began))
	return c, err
}

func (p meteredPool) ClaimAlloc(ctx context.Context, name, allocID string, owner pool.Owner) (*pool.Claim, error) {
	began := time.Now()
	c, err := p.Pool.ClaimAlloc(ctx, name, allocID, owner)
	p.m.observeClaim(name, c, err, time.Since(began))
	return c, err
}

// poolCollector reports every pool's counts at scrape time.
type poolCollector struct{ m *metrics }

var poolGauges = []struct {
	name, help string
	value      func(pool.Stats) float64
}{
	{"warm", "Warm sandboxes ready to be claimed.", func(s pool.Stats) float64 { return float64(s.Warm) }},
	{"starting", "Sandboxes dispatched and not yet running with a launch session open.", func(s pool.Stats) float64 { return float64(s.Starting) }},
	{"preparing", "Sandboxes running with a launch session open whose template's readiness check has not passed yet.", func(s pool.Stats) float64 { return float64(s.Preparing) }},
	{"claimed", "Sandboxes claimed by tasks.", func(s pool.Stats) float64 { return float64(s.Claimed) }},
	{"failed", "Sandboxes that died unclaimed and are being replaced.", func(s pool.Stats) float64 { return float64(s.Failed) }},
	{"size", "Warm sandboxes the pool keeps ready when idle (size).", func(s pool.Stats) float64 { return float64(s.Size) }},
	{"target", "Warm and starting sandboxes the pool keeps now: between size and max_warm, following demand.", func(s pool.Stats) float64 { return float64(s.Target) }},
	{"max", "Limit of warm, starting and claimed sandboxes (max).", func(s pool.Stats) float64 { return float64(s.Max) }},
	{"failing", "1 while the pool cannot work (its error attribute says why), else 0.", func(s pool.Stats) float64 {
		if s.Error != "" {
			return 1
		}
		return 0
	}},
}

var (
	poolGaugeDescs = func() []*prometheus.Desc {
		out := make([]*prometheus.Desc, len(poolGauges))
		for i, g := range poolGauges {
			out[i] = prometheus.NewDesc(prometheus.BuildFQName(metricsNamespace, "", g.name), g.help, []string{"pool"}, nil)
		}
		return out
	}()
	primeFailuresDesc = prometheus.NewDesc(prometheus.BuildFQName(metricsNamespace, "", "prime_failures_total"),
		"Warm sandboxes whose launch session could not be opened (each replaced) since the plugin started.", []string{"pool"}, nil)
	readyFailuresDesc = prometheus.NewDesc(prometheus.BuildFQName(metricsNamespace, "", "ready_failures_total"),
		"Sandboxes replaced since the plugin started because their readiness check did not pass within ready_timeout or stopped passing (the last output is in the pool's error attribute and the log).", []string{"pool"}, nil)
)

func (c poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range poolGaugeDescs {
		ch <- d
	}
	ch <- primeFailuresDesc
	ch <- readyFailuresDesc
}

func (c poolCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.mu.Lock()
	stats := c.m.pools
	c.m.mu.Unlock()
	if stats == nil {
		return
	}
	for name, s := range stats() {
		for i, g := range poolGauges {
			ch <- prometheus.MustNewConstMetric(poolGaugeDescs[i], prometheus.GaugeValue, g.value(s), name)
		}
		ch <- prometheus.MustNewConstMetric(primeFailuresDesc, prometheus.CounterValue, float64(s.PrepareFailures), name)
		ch <- prometheus.MustNewConstMetric(readyFailuresDesc, prometheus.CounterValue, float64(s.ReadyFailures), name)
	}
}
