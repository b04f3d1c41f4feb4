package shipper

import "time"

// Every timeout, interval and backoff of the package, named for what it bounds.
const (
	// holdCheckEvery is how often a holder looks whether its run is gone (its
	// sandbox purged without the plugin to stop it); it wakes at once when a
	// FIFO's reader goes away.
	holdCheckEvery = 5 * time.Second
	// holderOpenWait bounds how long a start waits for logmon's reader before
	// it starts a shipper without a holder (the reader is there from the
	// task's start; none means logmon is gone, and the shipper waits for it
	// anyway).
	holderOpenWait = 10 * time.Second
	// fifoReopenWait bounds how long a writer waits for a log FIFO's reader
	// to come back (logmon restarts with the agent and makes a new FIFO);
	// fifoReopenPoll is how often it tries.
	fifoReopenWait = 2 * time.Minute
	fifoReopenPoll = 100 * time.Millisecond
	// runGoneCheckEvery is how often a shipper looks whether its run's dir
	// is gone (its sandbox purged), which ends it.
	runGoneCheckEvery = time.Second
	// runGoneRecheck is how long a run's dir must stay absent to be gone
	// (runGone): longer than a command takes to rename it and put something
	// else in its place on a loaded machine.
	runGoneRecheck = 2 * time.Second
	// offsetSaveEvery bounds how much output a plugin restart can repeat:
	// offsets are saved at most this often, and always when following ends.
	offsetSaveEvery = time.Second
	// stopWait bounds how long Stop waits for a helper to end on SIGTERM
	// before it SIGKILLs it.
	stopWait = 5 * time.Second
	// exitPollEvery is how often a wait for a helper's exit looks where it
	// cannot be told (pollProcessExit).
	exitPollEvery = 50 * time.Millisecond
)
