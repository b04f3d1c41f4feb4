package sandbox

import "time"

// Every timeout, interval and backoff of the package, named for what it bounds.

// Defaults for the Runner's zero-valued fields.
const (
	// DefaultLaunchTimeout bounds a launch (Runner.LaunchTimeout).
	DefaultLaunchTimeout = 30 * time.Second
	// DefaultCallTimeout bounds a signal or an allocation lookup
	// (Runner.CallTimeout).
	DefaultCallTimeout = 10 * time.Second
	// DefaultPollInterval is how often Follow looks for output without a
	// file watch (Runner.PollInterval).
	DefaultPollInterval = 50 * time.Millisecond
)

const (
	// WatchedPollInterval is how often Follow looks for output anyway while a
	// file watch tells it about writes: a safety net, not the way output arrives.
	WatchedPollInterval = 500 * time.Millisecond
	// sessionReadyWait bounds how long Prime waits for the session's shell.
	sessionReadyWait = 30 * time.Second
	// pidRecordWait bounds how long a run that has a run dir may take to
	// record its pid: a launch session answers before the run records it.
	pidRecordWait = 30 * time.Second
	// pidRecordPollFirst and pidRecordPollMax bound the backoff between two
	// looks for the pid record (awaitPidRecord): it is usually there within
	// a millisecond.
	pidRecordPollFirst = 100 * time.Microsecond
	pidRecordPollMax   = 20 * time.Millisecond
	// hangupGrace is how long a hung-up exec'd process gets before SIGKILL
	// (the hangup script's own loop), plus room for the exec round trip.
	hangupGrace = 2 * time.Second
	// execPidPollEvery is how often a cancelled exec looks for its process's
	// pid record, within hangupGrace.
	execPidPollEvery = 50 * time.Millisecond
)
