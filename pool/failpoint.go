package pool

// HoldRecordEnv names a file for fault tests. In a build with the failpoint
// tag (nomadtest.BuildPlugin builds the plugin so), while that file exists,
// a claim's record written behind it (Options.WriteBehind) waits until the
// Manager stops: the window between hand-out and record that a crash of the
// plugin may hit. Production builds have no failpoint (failpoint_off.go).
const HoldRecordEnv = "AGENTKERNEL_POOL_TEST_HOLD_RECORD"
