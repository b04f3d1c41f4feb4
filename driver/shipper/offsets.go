package shipper

import (
	"encoding/json"
	"os"
	"sync"
	"time"

	"github.com/agentkernel/agentkernel-pool/driver/sandbox"
)

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
