package device

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
)

// DefaultMemoDir is where the device plugin remembers, per agent address,
// which node and data dir it found there. Nomad kills the device plugin with
// its agent and starts it anew, and the agent serves its API (the only place
// the plugin learns its node) only after the plugin's first fingerprint; with
// the memo that first fingerprint already carries the node's warm sandboxes,
// so the allocations the restarted client starts at once can reserve them.
// It is root's (0700), out of every sandbox's reach, and on tmpfs: a host
// reboot, which ends every sandbox too, forgets it.
const DefaultMemoDir = "/run/agentkernel-pool/device"

// maxMemoBytes bounds a memo file's read.
const maxMemoBytes = 4096

// location is where the plugin found its node: what the memo holds.
type location struct {
	NodeID  string `json:"node_id"`
	DataDir string `json:"data_dir"`
}

func (l location) valid() bool { return l.NodeID != "" && filepath.IsAbs(l.DataDir) }

// memoPath is the memo of the agent at address (one per agent on a host):
// the address the plugin calls, NOMAD_ADDR or the default included, so that
// agents on one host that differ only in NOMAD_ADDR do not share one.
func memoPath(dir, address string) string {
	sum := sha256.Sum256([]byte(address))
	return filepath.Join(dir, hex.EncodeToString(sum[:8])+".json")
}

// loadLocation reads the memo for address; ok is false when there is none
// or it is not one this plugin wrote.
func loadLocation(dir, address string) (loc location, ok bool) {
	f, err := os.OpenFile(memoPath(dir, address), os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return location{}, false
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return location{}, false
	}
	b, err := io.ReadAll(io.LimitReader(f, maxMemoBytes+1))
	if err != nil || len(b) > maxMemoBytes || json.Unmarshal(b, &loc) != nil || !loc.valid() {
		return location{}, false
	}
	return loc, true
}

// saveLocation replaces the memo for address, whole (a new file renamed over).
func saveLocation(dir, address string, loc location) error {
	b, err := json.Marshal(loc)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("memo dir: %w", err)
	}
	f, err := os.CreateTemp(dir, ".memo.*")
	if err != nil {
		return fmt.Errorf("write memo: %w", err)
	}
	tmp := f.Name()
	_, werr := f.Write(b)
	if err := errors.Join(werr, f.Close()); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write memo %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, memoPath(dir, address)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write memo: %w", err)
	}
	return nil
}

// remember keeps loc as the memo for address, unless it is there already.
func (p *Plugin) remember(address string, loc location) {
	if old, ok := loadLocation(p.memoDir, address); ok && old == loc {
		return
	}
	if err := saveLocation(p.memoDir, address, loc); err != nil {
		p.logger.Warn("cannot remember where the node is: after an agent restart the first device set will be empty", "error", err)
	}
}
