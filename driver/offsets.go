package driver

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/agentkernel/agentkernel-pool/driver/sandbox"
	"github.com/agentkernel/agentkernel-pool/plugin"
)

// offsetSaveEvery bounds how much output a plugin restart can repeat: offsets are
// saved at most this often, and always when following ends.
const offsetSaveEvery = time.Second

// offsetsPath is where a task's output offsets are kept: the task's own private
// dir on the host, which outlives the plugin process and goes with the task.
func offsetsPath(cfg *plugin.TaskConfig) string {
	if cfg.AllocDir == "" {
		return ""
	}
	return privateFile(cfg.AllocDir, cfg.Name, ".agentkernel-offsets.json")
}

// privateFile is where the plugin keeps a file of a task's: the task's private
// dir, which no sandbox and no other task reaches (the task dir when it has
// none).
func privateFile(allocDir, task, name string) string {
	dir := filepath.Join(allocDir, task, "private")
	if _, err := os.Stat(dir); err != nil {
		dir = filepath.Join(allocDir, task)
	}
	return filepath.Join(dir, name)
}

type offsetSaver struct {
	path  string
	mu    sync.Mutex
	last  time.Time
	cur   sandbox.Offsets
	dirty bool
}

func newOffsetSaver(path string) *offsetSaver { return &offsetSaver{path: path} }

func (s *offsetSaver) save(o sandbox.Offsets) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cur, s.dirty = o, true
	if time.Since(s.last) >= offsetSaveEvery {
		s.writeLocked()
	}
}

func (s *offsetSaver) flush() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dirty {
		s.writeLocked()
	}
}

func (s *offsetSaver) writeLocked() {
	s.last, s.dirty = time.Now(), false
	if s.path == "" {
		return
	}
	b, _ := json.Marshal(s.cur)
	tmp := s.path + ".tmp"
	if os.WriteFile(tmp, b, 0o600) == nil {
		_ = os.Rename(tmp, s.path)
	}
}

// loadOffsets reads saved offsets; none saved means the start of the output.
func loadOffsets(path string) sandbox.Offsets {
	var o sandbox.Offsets
	if path == "" {
		return o
	}
	if b, err := os.ReadFile(path); err == nil {
		_ = json.Unmarshal(b, &o)
	}
	return o
}
