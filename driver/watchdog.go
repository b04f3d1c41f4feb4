package driver

import (
	"fmt"
	"time"

	"github.com/agentkernel/agentkernel-pool/driver/sandbox"
	"github.com/agentkernel/agentkernel-pool/driver/shipper"
	"github.com/agentkernel/agentkernel-pool/plugin"
)

// The watchdog: no task hangs silently, whatever path failed. A task's exit
// is reported by its watcher (watch.go: the launch session's answer, then the
// output shipper, then the copy back), and each of those steps has its own
// bounds; the watchdog is the net under all of them. At a low rate it looks
// at every running task from the host alone (the run's records through the
// boundary, the helpers' pid files, /proc): a task whose command has exited
// (its exit record is there, or, where the sandbox's pids are the host's,
// neither the command nor its supervisor lives any more) and whose exit has
// not been reported within watchdogGrace, with no output moving meanwhile, is
// reported by the watchdog, with a task event naming the step that did not
// finish, and what the plugin knows of it is logged.
//
// A task whose watcher waits for a usable plugin config is left alone: that
// wait is the design (recover.go), and its output is shipped once the config
// is fixed.

// Steps of a task's watcher, named in the watchdog's event.
const (
	stepLaunch  = "the launch session's answer"
	stepBackend = "a usable plugin config"
	stepShip    = "the output shipper"
	stepResults = "the copy of the results back"
	stepHold    = "the stop of a task without command"
)

// setStep records the step a task's watcher waits in.
func (h *taskHandle) setStep(step string) {
	h.mu.Lock()
	h.step = step
	h.mu.Unlock()
}

// watchdogState is the watchdog's memory of one task.
type watchdogState struct {
	exitedAt time.Time // when the watchdog first saw the command exited
	reported bool
}

// startWatchdog starts the watchdog once, with the first tracked task.
func (d *Driver) startWatchdog() {
	d.watchdogOnce.Do(func() {
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			t := time.NewTicker(d.watchdogEvery)
			defer t.Stop()
			seen := map[string]*watchdogState{}
			for {
				select {
				case <-d.ctx.Done():
					return
				case <-t.C:
				}
				d.watchdogPass(time.Now(), seen)
			}
		}()
	})
}

// watchdogPass looks at every running task once; seen carries what earlier
// passes saw, by task id.
func (d *Driver) watchdogPass(now time.Time, seen map[string]*watchdogState) {
	live := map[string]bool{}
	for _, h := range d.tasks.all() {
		live[h.cfg.ID] = true
		if r, _ := h.result(); r != nil || !h.state.Command {
			continue
		}
		h.mu.Lock()
		step := h.step
		h.mu.Unlock()
		if step == stepBackend {
			continue
		}
		w := seen[h.cfg.ID]
		if w == nil {
			w = &watchdogState{}
			seen[h.cfg.ID] = w
		}
		if w.reported {
			continue
		}
		run := sandbox.Inspect(h.state.ref(), h.state.RunID, h.state.FilesWay == filesDirect)
		gone := run.Pid != 0 && !run.Alive && h.state.FilesWay == filesDirect
		if !run.Exited && !gone {
			w.exitedAt = time.Time{} // a pid record not read yet, or a process seen again
			continue
		}
		if w.exitedAt.IsZero() {
			w.exitedAt = now
			continue
		}
		helpers := shipper.Inspect(h.shipJob())
		if now.Sub(w.exitedAt) < d.watchdogGrace || now.Sub(helpers.SavedAt) < d.watchdogGrace {
			continue // not yet, or output is still moving
		}
		w.reported = true
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			d.watchdogReport(h, step, run, helpers, now.Sub(w.exitedAt))
		}()
	}
	for id := range seen {
		if !live[id] {
			delete(seen, id)
		}
	}
}

// watchdogReport reports the exit of a task whose watcher did not: the
// results copied back first (as the watcher would), then the exit, with an
// event saying which step failed; the watcher is stopped.
func (d *Driver) watchdogReport(h *taskHandle, step string, run sandbox.RunState, helpers shipper.State, waited time.Duration) {
	what := "exited"
	res := plugin.ExitResult{ExitCode: run.Exit.Code, Signal: run.Exit.Signal}
	if !run.Exited {
		what = "is gone without an exit record"
		res = plugin.ExitResult{ExitCode: 1, Err: "the command's processes are gone and it recorded no exit status"}
	}
	msg := fmt.Sprintf("Watchdog: the command in sandbox %s %s (exit code %d) at least %s ago, and %s never reported it: reported by the watchdog (%s; %s)",
		short(h.state.Claim.AllocID), what, res.ExitCode, waited.Round(time.Second), step, run, helpers)
	d.logger.Error("task's exit not reported by its watcher; the watchdog reports it", d.taskDump(h)...)
	// As the watcher would: nothing of the sandbox runs on once the exit is
	// reported (end.go), and the results are copied back only from a tree
	// that no longer changes.
	if err := d.endSandboxNow(h); err != nil {
		res = plugin.ExitResult{ExitCode: max(res.ExitCode, 1), Signal: res.Signal, Err: err.Error()}
	} else if step != stepResults {
		d.copyOut(h)
	}
	d.emit(h.cfg, msg, map[string]string{"sandbox_alloc_id": h.state.Claim.AllocID, "watchdog": step})
	h.setExit(res)
	h.cancel()
}
