package taskfiles

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"

	"github.com/agentkernel/agentkernel-pool/driver/allocfs"
)

// The state: what each tree of the sandbox held after the plugin's copies,
// for a write-back to tell what the command changed. An entry is keyed by a
// hash of its path (128 bits of SHA-256: no sandbox can make two paths
// collide), not the path, so the state's size does not grow with how deep
// the command nests its names: 40 bytes an entry in memory, 36 in the file,
// and at most Limits.Entries entries in all (In records at most that many,
// Refresh refuses to grow past it). At the default bounds the file is at
// most 3.6 MB.

// stateKey is the hash of an entry's path relative to its tree's root.
type stateKey [16]byte

func keyOf(rel []byte) stateKey {
	sum := sha256.Sum256(rel)
	return stateKey(sum[:16])
}

// entryState is what a write-back compares to tell a change.
type entryState struct {
	Mode  uint32
	Size  int64
	MTime int64
}

func stateOf(e allocfs.Entry) entryState {
	return entryState{Mode: e.Mode, Size: e.Size, MTime: e.MTime}
}

// treeState is one tree's entries.
type treeState map[stateKey]entryState

// entries is how many entries the state holds, over all trees.
func (s *Sync) stateEntries() int {
	n := 0
	for _, t := range s.state {
		n += len(t)
	}
	return n
}

// stateMagic starts a state file; a file from another version of the
// format is refused, as a task's driver state of another version is.
const stateMagic = "agentkernel-pool task files state 2\n"

// save writes the recorded state to StatePath (the task's private dir, which
// no sandbox reaches), streamed through a temporary file renamed into place:
// per tree, its name's length and name, its entry count, then the entries.
func (s *Sync) save() error {
	if s.StatePath == "" {
		return nil
	}
	tmp := s.StatePath + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("save task files state: %w", err)
	}
	w := bufio.NewWriter(f)
	_, _ = w.WriteString(stateMagic)
	var rec [36]byte
	for _, name := range slices.Sorted(maps.Keys(s.state)) {
		t := s.state[name]
		_ = binary.Write(w, binary.LittleEndian, uint16(len(name)))
		_, _ = w.WriteString(name)
		_ = binary.Write(w, binary.LittleEndian, uint32(len(t)))
		for k, e := range t {
			copy(rec[:16], k[:])
			binary.LittleEndian.PutUint32(rec[16:], e.Mode)
			binary.LittleEndian.PutUint64(rec[20:], uint64(e.Size))
			binary.LittleEndian.PutUint64(rec[28:], uint64(e.MTime))
			_, _ = w.Write(rec[:])
		}
	}
	err = errors.Join(w.Flush(), f.Close())
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("save task files state: %w", err)
	}
	return os.Rename(tmp, s.StatePath)
}

// loadLocked reads the recorded state once, after a plugin restart. The
// file is the plugin's own; it is read as a stream all the same, and no
// more entries than the bounds allow are taken from it.
func (s *Sync) loadLocked() error {
	if s.state != nil || s.StatePath == "" {
		if s.state == nil {
			s.state = map[string]treeState{}
		}
		return nil
	}
	f, err := os.Open(s.StatePath)
	if err != nil {
		return fmt.Errorf("read task files state: %w", err)
	}
	defer f.Close()
	state, err := readState(bufio.NewReader(f), s.limits().Entries)
	if err != nil {
		return fmt.Errorf("read task files state %s: %w", s.StatePath, err)
	}
	s.state = state
	return nil
}

func readState(r *bufio.Reader, max int) (map[string]treeState, error) {
	magic := make([]byte, len(stateMagic))
	if _, err := io.ReadFull(r, magic); err != nil || string(magic) != stateMagic {
		return nil, errors.New("not a state file of this version of the plugin")
	}
	state := map[string]treeState{}
	total := 0
	for {
		var nameLen uint16
		if err := binary.Read(r, binary.LittleEndian, &nameLen); errors.Is(err, io.EOF) {
			return state, nil
		} else if err != nil {
			return nil, err
		}
		name := make([]byte, nameLen)
		var count uint32
		if _, err := io.ReadFull(r, name); err != nil {
			return nil, err
		}
		if err := binary.Read(r, binary.LittleEndian, &count); err != nil {
			return nil, err
		}
		if total += int(count); total > max {
			return nil, fmt.Errorf("more than %d entries", max)
		}
		t := make(treeState, count)
		var rec [36]byte
		for range count {
			if _, err := io.ReadFull(r, rec[:]); err != nil {
				return nil, err
			}
			t[stateKey(rec[:16])] = entryState{
				Mode:  binary.LittleEndian.Uint32(rec[16:]),
				Size:  int64(binary.LittleEndian.Uint64(rec[20:])),
				MTime: int64(binary.LittleEndian.Uint64(rec[28:])),
			}
		}
		state[string(name)] = t
	}
}
