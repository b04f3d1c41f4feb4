// Package device is the agentkernel-pool device plugin: it makes each pool
// configured with `device = true` a Nomad device group, one instance per warm
// sandbox, so Nomad's scheduler places sandbox tasks where the warm
// sandboxes are and its plan applier never gives one sandbox to two tasks.
//
// The driver knows which sandboxes are warm (running, launch session open,
// readiness passed, unclaimed): it writes that into a state file in the
// client's data dir (WriteState), and the device plugin, the same binary
// started with the argument "device", sends it to Nomad as device groups
// (Groups) whenever it changes. Reserve hands the reserved instance's ID to
// the task's env (EnvSandbox), where the driver reads it and claims that
// very sandbox. ARCHITECTURE.md ("Cluster-wide warm placement") says why a
// file and not the Nomad API carries the set.
package device

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	"github.com/agentkernel/agentkernel-pool/plugin"
	"github.com/agentkernel/agentkernel-pool/pool"
)

// Names of the device groups and of the env var Reserve sets.
const (
	Vendor = "agentkernel"
	Type   = "sandbox"
	// EnvSandbox carries the reserved instance's ID to the task (and the
	// driver): a warm sandbox's allocation ID, or a cold slot's ID.
	EnvSandbox = "AGENTKERNEL_POOL_SANDBOX"
	// coldPrefix starts a cold slot's ID: cold.<pool>.<n>. Pool names have
	// no '.', and allocation IDs never start with "cold".
	coldPrefix = "cold."
	// coldSuffix ends a pool's cold group name: <pool>.cold.
	coldSuffix = ".cold"
)

// Bounds of a state file, so a damaged one cannot make the plugin read or
// send without end.
const (
	maxStateBytes = 1 << 20
	maxInstances  = 10000
	maxIDLength   = 128
)

// State is what the driver publishes for its node's device plugin.
type State struct {
	NodeID string      `json:"node_id"`
	Pools  []PoolState `json:"pools"`
}

// PoolState is one device pool: its warm sandboxes, and the cold slots that
// stand for sandboxes the node could still start within the pool's max.
//
// Taken lists instances that are no longer free but that an allocation
// placed a moment ago may still hold: a warm sandbox claimed or gone since,
// the cold slots beyond the capacity left. They are sent unhealthy: the
// scheduler gives them to no one, and the client still finds them when it
// reserves them for a task placed before (it fails such a task for good
// when the instance is not in the plugin's last fingerprint).
type PoolState struct {
	Name  string   `json:"name"`
	Warm  []string `json:"warm"`  // allocation IDs of warm, unclaimed sandboxes
	Cold  []string `json:"cold"`  // free cold slot IDs (ColdID)
	Taken []string `json:"taken"` // warm or cold IDs no longer free
}

// ColdID names cold slot n of pool.
func ColdID(pool string, n int) string { return fmt.Sprintf("%s%s.%d", coldPrefix, pool, n) }

// IsCold reports whether id names a cold slot rather than a warm sandbox.
func IsCold(id string) bool { return strings.HasPrefix(id, coldPrefix) }

// StateDir is where the driver and the device plugin of the Nomad client
// whose data dir is dataDir meet.
func StateDir(dataDir string) string { return filepath.Join(dataDir, "agentkernel-pool") }

const stateFile = "devices.json"

// Groups are the device groups of st: per pool, <pool> with the warm
// sandboxes (attributes pool = <pool>, warm = true) and <pool>.cold with the
// cold slots (warm = false), the taken ones of each unhealthy. Both are
// always sent, empty or not: a group appearing or going would change the
// node's computed class.
func Groups(st State) []plugin.DeviceGroup {
	var out []plugin.DeviceGroup
	for _, p := range st.Pools {
		warm, cold := healthy(p.Warm), healthy(p.Cold)
		for _, id := range p.Taken {
			if IsCold(id) {
				cold = append(cold, plugin.DeviceInstance{ID: id, HealthDescription: "no capacity left for it"})
			} else {
				warm = append(warm, plugin.DeviceInstance{ID: id, HealthDescription: "claimed or gone"})
			}
		}
		out = append(out,
			plugin.DeviceGroup{Vendor: Vendor, Type: Type, Name: p.Name, Instances: warm,
				Attributes: map[string]any{"pool": p.Name, "warm": true}},
			plugin.DeviceGroup{Vendor: Vendor, Type: Type, Name: p.Name + coldSuffix, Instances: cold,
				Attributes: map[string]any{"pool": p.Name, "warm": false}})
	}
	return out
}

func healthy(ids []string) []plugin.DeviceInstance {
	out := make([]plugin.DeviceInstance, 0, len(ids))
	for _, id := range ids {
		out = append(out, plugin.DeviceInstance{ID: id, Healthy: true})
	}
	return out
}

// Validate checks a state as read from its file: pool names as the pool
// core allows them, each once; IDs non-empty, short, unique and of the
// right kind; no more than maxInstances in all.
func (st State) Validate() error {
	seenPool := map[string]bool{}
	seenID := map[string]bool{}
	n := 0
	for _, p := range st.Pools {
		if err := pool.CheckName(p.Name); err != nil {
			return err
		}
		if seenPool[p.Name] {
			return fmt.Errorf("pool %q listed twice", p.Name)
		}
		seenPool[p.Name] = true
		for _, ids := range [][]string{p.Warm, p.Cold, p.Taken} {
			for _, id := range ids {
				n++
				switch {
				case n > maxInstances:
					return fmt.Errorf("more than %d instances", maxInstances)
				case id == "" || len(id) > maxIDLength:
					return fmt.Errorf("pool %q: instance id %q: want 1 to %d bytes", p.Name, id, maxIDLength)
				case seenID[id]:
					return fmt.Errorf("pool %q: instance id %q listed twice", p.Name, id)
				}
				seenID[id] = true
			}
		}
		for _, id := range p.Warm {
			if IsCold(id) {
				return fmt.Errorf("pool %q: warm instance %q is a cold slot id", p.Name, id)
			}
		}
		for _, id := range p.Cold {
			if !strings.HasPrefix(id, coldPrefix+p.Name+".") {
				return fmt.Errorf("pool %q: cold instance %q is not one of its cold slots", p.Name, id)
			}
		}
		for _, id := range p.Taken {
			if IsCold(id) && !strings.HasPrefix(id, coldPrefix+p.Name+".") {
				return fmt.Errorf("pool %q: taken instance %q is not one of its cold slots", p.Name, id)
			}
		}
	}
	return nil
}

// WriteState replaces the state file in dir (made 0700 if missing): a new
// file renamed over the old, so a reader sees the old or the new, whole.
func WriteState(dir string, st State) error {
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("encode device state: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("device state dir: %w", err)
	}
	f, err := os.CreateTemp(dir, stateFile+".*")
	if err != nil {
		return fmt.Errorf("write device state: %w", err)
	}
	tmp := f.Name()
	_, werr := f.Write(b)
	cerr := f.Close()
	if err := errors.Join(werr, cerr); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write device state %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, stateFile)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write device state: %w", err)
	}
	return nil
}

// ReadState reads the state file in dir; a missing file is an empty state.
// It follows no symlink, reads regular files only and at most maxStateBytes.
func ReadState(dir string) (State, error) {
	path := filepath.Join(dir, stateFile)
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if errors.Is(err, os.ErrNotExist) {
		return State{}, nil
	}
	if err != nil {
		return State{}, fmt.Errorf("read device state: %w", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return State{}, fmt.Errorf("read device state %s: not a regular file", path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxStateBytes+1))
	if err != nil {
		return State{}, fmt.Errorf("read device state %s: %w", path, err)
	}
	if len(b) > maxStateBytes {
		return State{}, fmt.Errorf("read device state %s: larger than %d bytes", path, maxStateBytes)
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return State{}, fmt.Errorf("read device state %s: %w", path, err)
	}
	if err := st.Validate(); err != nil {
		return State{}, fmt.Errorf("read device state %s: %w", path, err)
	}
	slices.SortFunc(st.Pools, func(a, b PoolState) int { return strings.Compare(a.Name, b.Name) })
	return st, nil
}
