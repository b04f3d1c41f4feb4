//go:build !failpoint

package driver

// crashAfterClaim is the fault point between claim and launch: nothing in a
// production build.
func crashAfterClaim() {}

// crashBeforeRecord is the fault point of a running task whose claim is not
// on record yet: nothing in a production build.
func crashBeforeRecord() {}
