package shipper

import (
	"fmt"
	"os"
	"time"

	"github.com/agentkernel/agentkernel-pool/driver/sandbox"
)

// State is what the plugin's own files say of a task's helpers: the pids of
// its running shipper and log holder (0 when none runs: pid files are
// checked against the process, as on adoption) and the offsets saved last.
type State struct {
	Shipper, Holder int
	Offsets         sandbox.Offsets
	// SavedAt is when the offsets were saved last (zero: never). A shipper
	// saves them at most once a second while output flows, so an old SavedAt
	// with a shipper running means it is not moving output.
	SavedAt time.Time
}

// Inspect reads the state of a task's helpers. It reads only the task's
// private files and /proc.
func Inspect(job Job) State {
	s := State{Shipper: shipperPID(job), Holder: holderPID(job), Offsets: loadOffsets(job.Offsets)}
	if job.Offsets != "" {
		if fi, err := os.Stat(job.Offsets); err == nil {
			s.SavedAt = fi.ModTime()
		}
	}
	return s
}

// String is the state in one line, for logs and task events.
func (s State) String() string {
	return fmt.Sprintf("shipper pid %d, log holder pid %d (0: none running), shipped stdout %d and stderr %d bytes",
		s.Shipper, s.Holder, s.Offsets.Stdout, s.Offsets.Stderr)
}
