//go:build failpoint

package driver

import (
	"os"
	"syscall"
	"time"

	"github.com/agentkernel/agentkernel-pool/pool"
)

var crashAfterClaimFile = os.Getenv(CrashAfterClaimEnv)

var holdRecordFile = os.Getenv(pool.HoldRecordEnv)

// crashBeforeRecord is the fault point of a running task whose claim's
// record the pool holds back (pool.HoldRecordEnv, armed by the same file):
// a second after the start (Nomad has the task's handle by then) the
// plugin deletes the file and kills itself, the record never written.
func crashBeforeRecord() {
	if holdRecordFile == "" {
		return
	}
	if _, err := os.Stat(holdRecordFile); err != nil {
		return
	}
	time.Sleep(time.Second)
	if os.Remove(holdRecordFile) == nil {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	}
}

// crashAfterClaim is the fault point between claim and launch.
func crashAfterClaim() {
	if crashAfterClaimFile != "" && os.Remove(crashAfterClaimFile) == nil {
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
	}
}
