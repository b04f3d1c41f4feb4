//go:build !failpoint

package shipper

// beforePidWait is the fault point before a wait for a helper's exit:
// nothing in a production build.
func beforePidWait() {}
