//go:build !failpoint

package driver

// crashAfterClaim is the fault point between claim and launch: nothing in a
// production build.
func crashAfterClaim() {}
