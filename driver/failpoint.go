package driver

import (
	"os"
	"syscall"
)

// CrashAfterClaimEnv names a file for fault tests. While that file exists,
// the plugin deletes it and kills itself right after a start has written its
// claim and before it launches the command: the worst moment for a crash,
// which the e2e suite uses to show that reconcile frees the orphaned claim.
// Unset (always, outside tests) it costs one comparison.
const CrashAfterClaimEnv = "AGENTKERNEL_POOL_TEST_CRASH_AFTER_CLAIM"

var crashAfterClaimFile = os.Getenv(CrashAfterClaimEnv)

// crashAfterClaim is the fault point between claim and launch.
func crashAfterClaim() {
	if crashAfterClaimFile != "" && os.Remove(crashAfterClaimFile) == nil {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	}
}
