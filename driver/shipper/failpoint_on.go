//go:build failpoint

package shipper

import (
	"os"
	"time"
)

var slowPidWait = os.Getenv(SlowPidWaitEnv) != ""

// beforePidWait pauses while SlowPidWaitEnv is set.
func beforePidWait() {
	if slowPidWait {
		time.Sleep(200 * time.Millisecond)
	}
}
