package driver

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/agentkernel/agentkernel-pool/device"
	"github.com/agentkernel/agentkernel-pool/internal/nomadapi"
	"github.com/agentkernel/agentkernel-pool/plugin"
	"github.com/agentkernel/agentkernel-pool/pool"
)

// Pools with `device = true` are device groups of the device plugin (package
// device): the driver publishes their warm sandboxes and cold slots in a
// state file the device plugin follows, and a task the scheduler gave one
// of them claims exactly that sandbox.

// reservedSandbox is the instance the scheduler reserved for the task, from
// the env the device plugin's Reserve gave it (never from the task's own
// env: a task can only name a pool). "" when the task asked for no sandbox
// device. A task may carry no other device: its command runs in the sandbox,
// which holds none.
func reservedSandbox(cfg *plugin.TaskConfig, poolName string) (string, error) {
	if len(cfg.DeviceEnv) == 0 {
		return "", nil
	}
	id, ok := cfg.DeviceEnv[device.EnvSandbox]
	if !ok || len(cfg.DeviceEnv) > 1 {
		// What cannot work is refused, not ignored: the command would run
		// without the device the scheduler reserved for it.
		return "", fmt.Errorf("resources: device requests cannot reach a sandbox (the command runs in pool %q's warm allocation, which holds no device); request the device in the pool's warm template instead", poolName)
	}
	switch {
	case strings.Contains(id, ","):
		return "", fmt.Errorf(`resources: device "%s/%s": count must be 1 (a task claims one sandbox), got instances %s`, device.Vendor, device.Type, id)
	case device.IsCold(id) && coldPool(id) != poolName:
		return "", fmt.Errorf("resources: device instance %s is pool %q's, but the task's config names pool %q: constrain the device to ${device.attr.pool} = %q", id, coldPool(id), poolName, poolName)
	}
	return id, nil
}

// coldPool is the pool of a cold slot ID (cold.<pool>.<n>).
func coldPool(id string) string {
	parts := strings.Split(id, ".")
	if len(parts) != 3 {
		return ""
	}
	return parts[1]
}

// claim claims the sandbox the scheduler reserved (want) when it is still
// warm, else any, as a task without a device request would.
func (d *Driver) claim(ctx context.Context, pl Pool, cfg *plugin.TaskConfig, poolName, want string, owner pool.Owner) (*pool.Claim, error) {
	if want == "" || device.IsCold(want) {
		return pl.Claim(ctx, poolName, owner)
	}
	c, err := pl.ClaimAlloc(ctx, poolName, want, owner)
	if err == nil && c.AllocID != want {
		d.emit(cfg, fmt.Sprintf("Sandbox %s the scheduler reserved is no longer warm; took %s instead", short(want), short(c.AllocID)),
			map[string]string{"pool": poolName, "reserved_sandbox": want})
	}
	return c, err
}

// deviceLoop publishes the device pools' state for the device plugin on
// every pool change (and every devicePublishEvery), until the plugin stops.
// A driver without device pools never writes one, nor asks the API where.
func (d *Driver) deviceLoop() {
	var dir, nodeID string
	var last *device.State
	var hist warmHistory
	t := time.NewTicker(devicePublishEvery)
	defer t.Stop()
	for {
		_, _, changed := d.health.get()
		if st, ok := d.deviceState(nodeID, time.Now(), &hist); ok && (len(st.Pools) > 0 || last != nil) {
			if dir == "" {
				var err error
				if nodeID, dir, err = d.locateDeviceDir(); err != nil {
					d.logger.Warn("cannot publish warm sandboxes for the device plugin yet", "error", err)
				} else {
					st.NodeID = nodeID
				}
			}
			if dir != "" && (last == nil || !reflect.DeepEqual(*last, st)) {
				if err := device.WriteState(dir, st); err != nil {
					d.logger.Error("cannot publish warm sandboxes for the device plugin", "error", err)
				} else {
					last = &st
				}
			}
		}
		select {
		case <-d.ctx.Done():
			return
		case <-changed:
		case <-t.C:
		}
		select {
		case <-d.ctx.Done():
			return
		case <-time.After(deviceSettle):
		}
	}
}

// locateDeviceDir asks the local agent for its node and data dir.
func (d *Driver) locateDeviceDir() (nodeID, dir string, err error) {
	cfg, _, err := d.current()
	if err != nil {
		return "", "", err
	}
	apiCfg := cfg.API
	apiCfg.Token = "" // each call sends d.token
	c, err := nomadapi.NewClient(apiCfg)
	if err != nil {
		return "", "", err
	}
	self, err := agentSelf(d.ctx, c, d.token)
	if err != nil {
		return "", "", err
	}
	nodeID = self.Stats["client"]["node_id"]
	dataDir, _ := self.Config["DataDir"].(string)
	if nodeID == "" || !filepath.IsAbs(dataDir) {
		return "", "", errors.New("the agent at this address is not this node's client: point address at the local agent")
	}
	return nodeID, device.StateDir(dataDir), nil
}

// deviceState is what the device plugin should advertise now; ok is false
// while the pools do not run (the last state stands meanwhile).
//
// Per device pool: its warm candidates, and cold slots for what the node
// could still start, max - warm - claimed - failed (none while the pool
// fails, so the scheduler sends tasks elsewhere). Every cold slot of 0 to
// max-1 is listed, the free ones healthy: a cold slot a running task holds
// is never one of them, so the scheduler's count of free cold slots is the
// capacity left. A warm sandbox no longer free stays listed, unhealthy, for
// goneGrace (see device.PoolState.Taken).
func (d *Driver) deviceState(nodeID string, now time.Time, hist *warmHistory) (device.State, bool) {
	cfg, pl, err := d.currentPool()
	if err != nil {
		return device.State{}, false
	}
	st := device.State{NodeID: nodeID}
	names := make([]string, 0, len(cfg.Devices))
	for name := range cfg.Devices {
		names = append(names, name)
	}
	slices.Sort(names)
	if len(names) == 0 {
		return st, true
	}
	stats, held := pl.Stats(), d.heldColdSlots()
	warm := map[string][]string{}
	for _, w := range pl.Warm() {
		if cfg.Devices[w.Pool] {
			warm[w.Pool] = append(warm[w.Pool], w.AllocID)
		}
	}
	gone := hist.update(now, warm)
	for _, name := range names {
		ps := device.PoolState{Name: name, Warm: append([]string{}, warm[name]...), Cold: []string{}, Taken: append([]string{}, gone[name]...)}
		s := stats[name]
		free := s.Max - len(ps.Warm) - s.Claimed - s.Failed
		if s.Error != "" {
			free = 0
		}
		hs := held[name]
		for i := 0; i < s.Max; i++ {
			id := device.ColdID(name, i)
			if free > 0 && !slices.Contains(hs, id) {
				ps.Cold = append(ps.Cold, id)
				free--
			} else {
				ps.Taken = append(ps.Taken, id)
			}
		}
		st.Pools = append(st.Pools, ps)
	}
	return st, true
}

// maxGone bounds how many warm sandboxes no longer free stay listed, and
// goneGrace (timeouts.go) for how long.
const maxGone = 256

// warmHistory remembers, for one deviceLoop, which warm sandboxes it
// advertised and since when the ones no longer warm are gone.
type warmHistory struct {
	last map[string]string    // warm sandbox -> pool, as last advertised
	gone map[string]goneEntry // sandbox no longer warm -> pool and since when
}

type goneEntry struct {
	pool string
	at   time.Time
}

// update takes the warm sandboxes by pool now and returns, by pool and
// sorted, those advertised warm within goneGrace that no longer are (at
// most maxGone per pool, the newest).
func (h *warmHistory) update(now time.Time, warm map[string][]string) map[string][]string {
	if h.gone == nil {
		h.gone = map[string]goneEntry{}
	}
	cur := map[string]string{}
	for pool, ids := range warm {
		for _, id := range ids {
			cur[id] = pool
			delete(h.gone, id)
		}
	}
	for id, pool := range h.last {
		if _, ok := cur[id]; !ok {
			h.gone[id] = goneEntry{pool: pool, at: now}
		}
	}
	h.last = cur
	byPool := map[string][]string{}
	for id, e := range h.gone {
		if now.Sub(e.at) >= goneGrace {
			delete(h.gone, id)
			continue
		}
		byPool[e.pool] = append(byPool[e.pool], id)
	}
	for pool, ids := range byPool {
		if len(ids) > maxGone {
			slices.SortFunc(ids, func(a, b string) int { return h.gone[b].at.Compare(h.gone[a].at) })
			for _, id := range ids[maxGone:] {
				delete(h.gone, id)
			}
			ids = ids[:maxGone]
		}
		slices.Sort(ids)
		byPool[pool] = ids
	}
	return byPool
}

// heldColdSlots lists, by pool, the cold slots of this node's running tasks.
func (d *Driver) heldColdSlots() map[string][]string {
	d.tasks.mu.RLock()
	defer d.tasks.mu.RUnlock()
	out := map[string][]string{}
	for _, h := range d.tasks.tasks {
		id := h.cfg.DeviceEnv[device.EnvSandbox]
		if !device.IsCold(id) {
			continue
		}
		select {
		case <-h.done:
			continue // exited: Nomad counts its slot free already
		default:
		}
		out[coldPool(id)] = append(out[coldPool(id)], id)
	}
	for p, ids := range out {
		slices.Sort(ids)
		out[p] = slices.Compact(ids)
	}
	return out
}
