package shipper

// SlowPidWaitEnv arms, in a plugin built with the failpoint tag (the e2e
// suite builds it so), a pause of 200 ms before every wait for a
// helper's exit starts (waitProcessExit): the window in which an exit used
// to be missed, widened so that a soak shows whether one still is.
// Production builds have no failpoint (failpoint_off.go).
const SlowPidWaitEnv = "AGENTKERNEL_POOL_TEST_SLOW_PIDWAIT"
