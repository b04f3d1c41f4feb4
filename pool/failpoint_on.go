//go:build failpoint

package pool

import "os"

// holdRecord reports whether the fault point is armed.
func holdRecord() bool {
	f := os.Getenv(HoldRecordEnv)
	if f == "" {
		return false
	}
	_, err := os.Stat(f)
	return err == nil
}
