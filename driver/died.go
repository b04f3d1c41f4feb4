package driver

import (
	"context"
	"fmt"

	"github.com/agentkernel/agentkernel-pool/driver/shipper"
	"github.com/agentkernel/agentkernel-pool/plugin"
)

// sandboxDied ends a task whose sandbox allocation stopped under it. A task
// that holds its sandbox and was being stopped exits 0; any other fails,
// saying so, and Nomad's restart policy may start it again in a new sandbox.
//
// A command's output is cut short first (cut ends the watcher's Ship, which
// sends on shipped whether it saw the run's end first) and its shipper and
// log holder are stopped and waited for, all before the exit is reported: the
// next attempt's logmon start then finds the last attempt's stream ended and
// opens the FIFOs anew. Left running, they kept the FIFOs open past the
// restart, logmon kept its old readers, and those saw end of file later:
// nothing of the next attempt reached the log. What the command printed in
// its last moment, before its shipper read it, may be missing (the shipper
// reads on inotify events, long before the pool learns that the allocation
// stopped).
func (d *Driver) sandboxDied(h *taskHandle, reason string, cut context.CancelFunc, shipped <-chan bool) {
	h.mu.Lock()
	stopping := h.stopping
	h.mu.Unlock()
	if stopping && !h.state.Command {
		h.setExit(plugin.ExitResult{})
		return
	}
	if h.state.Command {
		cut()
		if <-shipped {
			return // the run ended first: the watcher reports its exit
		}
		shipper.Stop(h.shipJob())
	}
	h.setExit(plugin.ExitResult{ExitCode: 1, Err: fmt.Sprintf("sandbox allocation %s stopped from outside: %s", short(h.state.Claim.AllocID), reason)})
}
