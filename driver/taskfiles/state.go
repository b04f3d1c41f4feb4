package taskfiles

import (
	"encoding/json"
	"fmt"
	"os"
)

// save writes the recorded state to StatePath (the task's private dir, which
// no sandbox reaches), through a temporary file renamed into place.
func (s *Sync) save() error {
	if s.StatePath == "" {
		return nil
	}
	b, err := json.Marshal(s.state)
	if err != nil {
		return err
	}
	tmp := s.StatePath + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("save task files state: %w", err)
	}
	return os.Rename(tmp, s.StatePath)
}

// loadLocked reads the recorded state once, after a plugin restart.
func (s *Sync) loadLocked() error {
	if s.state != nil || s.StatePath == "" {
		if s.state == nil {
			s.state = map[string]entryState{}
		}
		return nil
	}
	b, err := os.ReadFile(s.StatePath)
	if err != nil {
		return fmt.Errorf("read task files state: %w", err)
	}
	return json.Unmarshal(b, &s.state)
}
