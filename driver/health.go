package driver

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/agentkernel/agentkernel-pool/internal/nodeattr"
	"github.com/agentkernel/agentkernel-pool/plugin"
)

var (
	errNotReady      = errors.New("driver not ready: still connecting to the nomad api or starting pools")
	errNotConfigured = errors.New("driver not configured yet: no plugin config received")
)

type errInvalidConfig struct{ err error }

func (e errInvalidConfig) Error() string { return "invalid plugin config: " + oneLine(e.err) }
func (e errInvalidConfig) Unwrap() error { return e.err }

// healthState is the driver's health; every change wakes the fingerprint streams.
type healthState struct {
	mu      sync.Mutex
	health  plugin.Health
	desc    string
	changed chan struct{}
}

func newHealthState() *healthState {
	return &healthState{health: plugin.HealthUnhealthy, desc: "starting: waiting for the plugin config", changed: make(chan struct{})}
}

func (h *healthState) set(health plugin.Health, desc string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.health == health && h.desc == desc {
		return
	}
	h.health, h.desc = health, desc
	close(h.changed)
	h.changed = make(chan struct{})
}

// poke wakes the fingerprint streams without a health change (pool counts moved).
func (h *healthState) poke() {
	h.mu.Lock()
	defer h.mu.Unlock()
	close(h.changed)
	h.changed = make(chan struct{})
}

func (h *healthState) get() (plugin.Health, string, <-chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.health, h.desc, h.changed
}

// Fingerprint implements plugin.Driver: one report at once, then one per change.
func (d *Driver) Fingerprint(ctx context.Context) (<-chan plugin.Fingerprint, error) {
	ch := make(chan plugin.Fingerprint, 1)
	go func() {
		defer close(ch)
		var last *plugin.Fingerprint
		for {
			fp, changed := d.fingerprint()
			if last == nil || fp.Health != last.Health || fp.Description != last.Description || !maps.Equal(fp.Attributes, last.Attributes) {
				select {
				case ch <- fp:
					last = &fp
				case <-ctx.Done():
					return
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-changed:
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(fingerprintDebounce):
			}
		}
	}()
	return ch, nil
}

func (d *Driver) fingerprint() (plugin.Fingerprint, <-chan struct{}) {
	health, desc, changed := d.health.get()
	attrs := map[string]any{nodeattr.Version: Version}
	d.mu.Lock()
	p, metricsErr := d.pool, d.metricsErr
	d.mu.Unlock()
	var failing []string
	if p != nil {
		for name, st := range p.Stats() {
			attrs[nodeattr.Pool(name, nodeattr.Size)] = int64(st.Size)
			attrs[nodeattr.Pool(name, nodeattr.Target)] = int64(st.Target)
			attrs[nodeattr.Pool(name, nodeattr.Max)] = int64(st.Max)
			attrs[nodeattr.Pool(name, nodeattr.Warm)] = int64(st.Warm)
			attrs[nodeattr.Pool(name, nodeattr.Preparing)] = int64(st.Preparing)
			attrs[nodeattr.Pool(name, nodeattr.Claimed)] = int64(st.Claimed)
			attrs[nodeattr.Pool(name, nodeattr.PrimeFailures)] = int64(st.PrepareFailures)
			// Always published, empty while the pool works: Nomad keeps a
			// node attribute a fingerprint leaves out at its last value.
			attrs[nodeattr.Pool(name, nodeattr.Error)] = st.Error
			if st.Error != "" {
				failing = append(failing, st.Error)
			}
		}
	}
	if metricsErr != "" {
		failing = append(failing, metricsErr)
	}
	if len(failing) > 0 && health == plugin.HealthHealthy {
		// The driver stays healthy: the other pools serve, and a task on a
		// failing pool fails at once with the same reason.
		slices.Sort(failing)
		desc += "; " + strings.Join(failing, "; ")
	}
	return plugin.Fingerprint{Health: health, Description: desc, Attributes: attrs}, changed
}

// oneLine folds a (joined) error into one line for a health description.
func oneLine(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", "; ")
}
