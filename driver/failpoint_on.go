//go:build failpoint

package driver

import (
	"os"
	"syscall"
)

var crashAfterClaimFile = os.Getenv(CrashAfterClaimEnv)

// crashAfterClaim is the fault point between claim and launch.
func crashAfterClaim() {
	if crashAfterClaimFile != "" && os.Remove(crashAfterClaimFile) == nil {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	}
}
