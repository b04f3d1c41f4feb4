//go:build !failpoint

package pool

// holdRecord is a fault point (failpoint_on.go): never armed in a
// production build.
func holdRecord() bool { return false }
