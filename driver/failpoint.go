package driver

// CrashAfterClaimEnv names a file for fault tests. In a plugin built with the
// failpoint tag (the e2e suite builds it so: nomadtest.BuildPlugin), while that
// file exists, the plugin deletes it and kills itself right after a start has
// written its claim and before it launches the command: the worst moment for
// a crash, which the e2e suite uses to show that reconcile frees the orphaned
// claim. Production builds have no failpoint (failpoint_off.go).
const CrashAfterClaimEnv = "AGENTKERNEL_POOL_TEST_CRASH_AFTER_CLAIM"
