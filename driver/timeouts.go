package driver

import "time"

// Every timeout, interval and backoff of the driver, named for what it bounds.
// A field of Driver that tests shorten (startRetry, reloadEvery, watchdogEvery,
// watchdogGrace) starts from the constant here.
const (
	// apiCallTimeout bounds one Nomad API call: a claim's record, a signal,
	// a release, a usage read, the health probe.
	apiCallTimeout = 10 * time.Second
	// apiCheckInterval is how often a running plugin probes the Nomad API
	// for its health.
	apiCheckInterval = 15 * time.Second
	// fingerprintDebounce batches bursts of pool changes into one node update.
	fingerprintDebounce = 250 * time.Millisecond

	// localNodeRetryFirst and localNodeRetryMax bound the backoff while the
	// local agent does not answer yet at plugin start (backend.go).
	localNodeRetryFirst = 500 * time.Millisecond
	localNodeRetryMax   = 15 * time.Second
	// startProbeEvery is how often the API is probed while the pools are starting.
	startProbeEvery = 2 * time.Second
	// defaultStartRetry is the pause before starting the pools again after a
	// failed start (Driver.startRetry).
	defaultStartRetry = 15 * time.Second
	// reloadEvery is how often the files the plugin block names are read
	// again (Driver.reloadEvery).
	reloadEvery = 15 * time.Second

	// backendWait bounds how long a start waits for a plugin that is still
	// connecting to the Nomad API.
	backendWait = 15 * time.Second
	// poolPollEvery is how often a start or a recovery waiting for the pools
	// looks again (waitPool).
	poolPollEvery = 50 * time.Millisecond
	// launchTimeout bounds the launch of a task's command in its sandbox.
	launchTimeout = 30 * time.Second
	// keepClaimFirst and keepClaimMax bound the backoff between two attempts
	// to put a claim on record (claim.go).
	keepClaimFirst = time.Second
	keepClaimMax   = 30 * time.Second
	// refreshDelay gathers the writes of one template render into one
	// refresh of the task's files (fileswatch.go).
	refreshDelay = 100 * time.Millisecond

	// killGrace is how long a SIGKILLed command may take to be reported dead.
	killGrace = 10 * time.Second
	// defaultStatsInterval is TaskStats' interval when Nomad asks for none.
	defaultStatsInterval = time.Second
	// watchdogEvery is how often the watchdog looks at the running tasks
	// (Driver.watchdogEvery).
	watchdogEvery = 10 * time.Second
	// watchdogGrace is how long an exited command's task may stay
	// unreported, with no output moving, before the watchdog reports it
	// (Driver.watchdogGrace).
	watchdogGrace = 30 * time.Second

	// devicePublishEvery re-publishes the device state without a change
	// signal: the pool tells count changes, and a warm sandbox replaced by
	// another leaves the counts.
	devicePublishEvery = 5 * time.Second
	// deviceSettle gathers a burst of pool changes into one write.
	deviceSettle = 50 * time.Millisecond
	// goneGrace is how long a warm sandbox no longer free stays listed
	// (device.go, with maxGone): an allocation is placed on one before its
	// node starts it, which takes well under a second on an idle node and
	// was seen to take 19 s on a saturated one.
	goneGrace = 2 * time.Minute

	// metricsReadHeaderTimeout and metricsWriteTimeout bound one scrape of
	// /metrics; metricsStopWait how long stopping waits for scrapes in flight.
	metricsReadHeaderTimeout = 10 * time.Second
	metricsWriteTimeout      = 30 * time.Second
	metricsStopWait          = 5 * time.Second
)
