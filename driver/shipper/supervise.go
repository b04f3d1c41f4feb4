package shipper

import (
	"context"
	"fmt"
	"os"

	"github.com/agentkernel/agentkernel-pool/driver/sandbox"
)

// maxShipperStarts bounds how often one task's shipper is restarted, and how
// often its log holder is while one shipper runs.
const maxShipperStarts = 5

// Run adopts or starts the task's shipper process and waits until the run has
// exited and its output is shipped. Ending ctx leaves the shipper and the log
// holder running; otherwise the holder is stopped before Run returns, so logmon
// has read the end of the logs when the exit is reported.
func Run(ctx context.Context, job Job) (sandbox.ExitStatus, error) {
	s := &supervision{job: job}
	st, err := s.run(ctx)
	if ctx.Err() == nil {
		stopHolder(job)
	}
	return st, err
}

// The supervision of one task's output is a small state machine, whose
// actions are the two helpers' (process.go: the shipper; hold.go: the log
// holder):
//
//	look    a shipper of this run is running (one adopted after a plugin
//	        restart): ship. None: the run's end was shipped by an earlier
//	        one: done; it was started too often: fail; else start.
//	start   the log holder first (from then on a shipper's death does not
//	        end the logs), then a shipper: ship.
//	ship    wait for the shipper's exit, starting the log holder again
//	        whenever it dies meanwhile (the shipper holds the FIFOs in
//	        between): exited.
//	exited  the shipper recorded tampering: fail; the run exited: done; the
//	        run is gone: fail; else look again.
type supervisionState int

const (
	stateLook supervisionState = iota
	stateStart
	stateShip
	stateExited
	stateDone
)

// supervision is the state the machine carries between its steps.
type supervision struct {
	job    Job
	host   sandbox.Runner // reads the run's files on the host, as the shipper does: no API call
	pid    int            // the running shipper's, 0 when none is known
	starts int            // shippers started
	status sandbox.ExitStatus
}

// run steps the machine from look until it is done or fails.
func (s *supervision) run(ctx context.Context) (sandbox.ExitStatus, error) {
	for state := stateLook; ; {
		var err error
		switch state {
		case stateLook:
			state, err = s.look()
		case stateStart:
			state, err = s.start(ctx)
		case stateShip:
			state, err = s.ship(ctx)
		case stateExited:
			state, err = s.exited()
		}
		if err != nil {
			return sandbox.ExitStatus{}, err
		}
		if state == stateDone {
			return s.status, nil
		}
	}
}

func (s *supervision) look() (supervisionState, error) {
	if s.pid = shipperPID(s.job); s.pid != 0 {
		return stateShip, nil
	}
	if err := tampered(s.job); err != nil {
		return 0, err
	}
	if st, exited, err := s.host.Status(s.job.Ref, s.job.RunID); err == nil && exited && s.starts > 0 {
		s.status = st
		return stateDone, nil
	}
	if s.starts >= maxShipperStarts {
		return 0, fmt.Errorf("output shipper of run %s exited %d times before the run ended%s (see %s.shipper.log)", s.job.RunID, s.starts, lastWords(s.job.Offsets+".shipper.log"), s.job.Offsets)
	}
	return stateStart, nil
}

func (s *supervision) start(ctx context.Context) (supervisionState, error) {
	// Without a holder (no reader: logmon gone) the shipper still runs: it
	// waits for a reader, and the run's exit code is reported.
	_ = ensureHolder(ctx, s.job, holderOpenWait)
	pid, err := startShipper(s.job)
	if err != nil {
		return 0, err
	}
	s.pid = pid
	s.starts++
	return stateShip, nil
}

func (s *supervision) ship(ctx context.Context) (supervisionState, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the waits below
	job, pid := s.job, s.pid
	shipper := make(chan error, 1)
	go func() {
		shipper <- waitProcessExit(ctx, pid, func() bool { return processAlive(pid, ShipCommand, job.RunID) })
	}()
	for holds := 0; holds <= maxShipperStarts; holds++ {
		if ensureHolder(ctx, job, 0) != nil {
			break // no reader now (logmon gone): the shipper waits for the next one
		}
		holder := make(chan error, 1)
		if hpid := holderPID(job); hpid != 0 {
			go func() {
				holder <- waitProcessExit(ctx, hpid, func() bool { return processAlive(hpid, HoldCommand, job.RunID) })
			}()
		}
		select {
		case err := <-shipper:
			return stateExited, err
		case <-holder:
			if ctx.Err() != nil {
				return 0, ctx.Err()
			}
			_ = os.Remove(holderPIDPath(job))
		}
	}
	return stateExited, <-shipper
}

func (s *supervision) exited() (supervisionState, error) {
	s.pid = 0
	_ = os.Remove(shipperPIDPath(s.job))
	if err := tampered(s.job); err != nil {
		return 0, err
	}
	if st, exited, err := s.host.Status(s.job.Ref, s.job.RunID); err == nil && exited {
		s.status = st
		return stateDone, nil
	}
	if gone, err := runGone(s.job); err != nil || gone {
		if err == nil {
			err = fmt.Errorf("run %s is gone from sandbox %s", s.job.RunID, short(s.job.Ref.AllocID))
		}
		return 0, err
	}
	return stateLook, nil
}
